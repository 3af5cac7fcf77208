"""`cmr-fusion export`: trained checkpoints -> ONNX models with parity check, latency and model cards."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

HELP = "export trained encoders to ONNX (dynamic batch), check parity with torch, write model cards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", type=Path, required=True,
                        help="folder written by `cmr-fusion train` (<modality>_encoder.pt, training.json)")
    parser.add_argument("--out", type=Path, required=True, help="folder for <modality>_encoder.onnx and the cards")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="JSON written by `cmr-fusion eval --json` to record as the measured recall in the cards")
    parser.add_argument("--eval-command", default=None, help="the eval command that produced --metrics (for the card)")
    parser.add_argument("--training-data", default=None,
                        help="how the training bags were made (free text for the card, e.g. the simulate commands)")
    parser.add_argument("--no-latency", action="store_true", help="skip the onnxruntime latency measurement")


def _kept_training(out: Path, modality, model) -> dict | None:
    """The training block of the card already in ``out`` for ``modality`` when its weights (``<name>.pt`` beside it)
    are exactly ``model``'s: an encoder frozen during training keeps the history of the run that trained it."""
    import torch

    from cmr_fusion_ros.core.encoder import card_path, model_path
    from cmr_fusion_ros.core.errors import ModelError
    from cmr_fusion_ros.training.models import checkpoint_path, load_checkpoint

    card = card_path(model_path(out, modality))
    if not card.is_file() or not checkpoint_path(out, modality).is_file():
        return None
    try:
        _, old, _ = load_checkpoint(checkpoint_path(out, modality))
        training = json.loads(card.read_text())["training"]
    except (ModelError, OSError, ValueError, KeyError):
        return None
    a, b = old.state_dict(), model.state_dict()
    if a.keys() != b.keys() or not all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a):
        return None
    return {k: v for k, v in training.items() if k not in ("parity_max_abs_diff", "frozen_in")}


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.core.encoder import EncoderConfig, OnnxEncoder, card_path
    from cmr_fusion_ros.core.errors import BagError, ModelError
    from cmr_fusion_ros.core.preprocess import preprocessing_from_dict
    from cmr_fusion_ros.core.types import Modality
    from cmr_fusion_ros.eval.evaluate import measure_latency
    from cmr_fusion_ros.machine import machine_summary
    from cmr_fusion_ros.training.dataset import MODALITIES
    from cmr_fusion_ros.training.export import export_all
    from cmr_fusion_ros.training.models import checkpoint_path, load_checkpoint

    models, pres = {}, {}
    found = [m for m in MODALITIES if checkpoint_path(args.checkpoints, m).is_file()]  # a run on 2 modalities: 2
    for m in found or MODALITIES:
        mod, model, pre = load_checkpoint(checkpoint_path(args.checkpoints, m))
        models[mod] = model
        pres[mod] = preprocessing_from_dict(pre)
    log_file = args.checkpoints / "training.json"
    log = json.loads(log_file.read_text()) if log_file.is_file() else {}
    last = log.get("history", [])
    best = next((h for h in reversed(last) if h.get("best")), None)
    training = {
        "command": log.get("command"),
        "seed": log.get("seed"),
        "train_bags": log.get("train_bags"),
        "val_bags": log.get("val_bags"),
        "train_frames": log.get("train_frames"),
        "config": log.get("config"),
        "best_epoch": best and best["epoch"],
        "val_recall@1_best_epoch": best and best["val_recall@1"],
        "machine": log.get("machine"),
        "init": log.get("init"),
        "data": args.training_data,
    }
    metrics = {}
    if args.metrics:
        if not args.metrics.is_file():
            raise BagError(str(args.metrics), "no such metrics file")
        ev = json.loads(args.metrics.read_text())
        measured_on = ev.get("model_sha256") or {}
        metrics = {
            "measured_on_sha256": measured_on,
            "command": args.eval_command,
            "database": ev.get("database"),
            "queries": ev.get("queries"),
            "radius_m": ev.get("radius_m"),
            # LiDAR -> LiDAR searched at this many headings (eval --lidar-views; files older than the option: 1)
            "lidar_views": ev.get("lidar_views", 1),
            **({"turned_view_penalty": ev["turned_view_penalty"]} if "turned_view_penalty" in ev else {}),
            "recall": {pair: {k: v for k, v in r.items() if k.startswith("recall@")} for pair, r in ev["pairs"].items()},
            "num_queries": {pair: r.get("num_counted") for pair, r in ev["pairs"].items()},
        }
    machine = machine_summary()

    def latency(onnx_file: Path) -> dict:
        if args.no_latency:
            return {}
        enc = OnnxEncoder(EncoderConfig(str(onnx_file), intra_op_threads=1, verify_sha256=False))
        return {**measure_latency(enc, (1, 8)), "machine": machine}

    command = "cmr-fusion " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["export"] else None
    print(f"command: {command or 'cmr-fusion export'}")
    print(f"machine: {machine}")
    training = {**training, "export_command": command}
    frozen = {Modality(m) for m in (log.get("config") or {}).get("frozen") or []}
    kept = {m: t for m in frozen if (t := _kept_training(args.out, m, models[m])) is not None}
    for m, t in kept.items():
        print(f"{m.value}: frozen in this training and unchanged: its card keeps its own training history")
    training_for = {m: {**t, "export_command": command, "frozen_in": training["command"]} for m, t in kept.items()}
    results = export_all(models, pres, args.out, training=training, metrics=metrics, latency_fn=latency,
                         training_for=training_for)
    for m, r in results.items():
        got = r["sha256"]
        if args.metrics and measured_on.get(m.value) not in (None, got):
            for res in results.values():  # no card may carry figures of another model
                card_path(res["file"]).unlink(missing_ok=True)
                card_path(res["file"]).with_suffix(".md").unlink(missing_ok=True)
            raise ModelError(r["file"], f"--metrics were measured on a model with sha256 {measured_on[m.value]}, "
                                        f"not this export ({got}): re-run the eval on these models")
        shutil.copyfile(checkpoint_path(args.checkpoints, m), checkpoint_path(args.out, m))
        size = Path(r["file"]).stat().st_size / 1e6
        lat = r["latency_ms"]
        lat_txt = (f"latency b1 {lat['batch1_median']:.2f} ms, b8 {lat['batch8_median']:.2f} ms (1 thread)" if lat else "")
        print(f"{m.value:>6}: {r['file']} {size:.1f} MB, parity max|torch-onnx| {r['parity_max_abs_diff']:.2e}  {lat_txt}")
    return 0
