"""`cmr-fusion train`: contrastive training of the camera, LiDAR and radar encoders on bags with odometry."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from cmr_fusion_ros.cli_options import add_no_progress
from cmr_fusion_ros.commands.eval import (
    add_modalities_argument, add_rig_arguments, add_topic_arguments, pose_rule, rig_options_from_args, topics_from_args,
)
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.types import Modality

HELP = "train the three encoders (symmetric InfoNCE over all modality pairs) on bags with ground-truth odometry"


def expand_bags(paths: list[Path]) -> list[Path]:
    """A bag (a folder with metadata.yaml, or an .mcap/.db3 file) stays; any other folder expands to every bag
    below it (e.g. town_101/session_00, town_101/session_01, town_102/...), sorted."""
    out: list[Path] = []
    for p in paths:
        if (p / "metadata.yaml").is_file() or p.suffix in (".mcap", ".db3"):
            out.append(p)
        elif p.is_dir():
            subs = sorted(q.parent for q in p.rglob("metadata.yaml"))
            out.extend(subs if subs else [p])
        else:
            out.append(p)
    return out


def pair_bags(items: list[list[Path]], bags: list[Path]) -> list[tuple[Path, Path]]:
    """``--pair BAGS REFERENCE`` items -> (training bag, reference bag) pairs: a bag pairs with a bag; a folder's bags
    pair with the bags at the same relative path under the reference folder. Every paired bag must be a training
    bag and every one must have its reference (:class:`ConfigError` naming the item otherwise)."""
    training = {b.resolve() for b in bags}
    out: list[tuple[Path, Path]] = []
    for new, ref in items:
        mine = expand_bags([new])
        if mine == [new]:
            found = [(new, ref)]
        else:
            found = [(b, ref / b.relative_to(new)) for b in mine]
        for b, r in found:
            if b.resolve() not in training:
                raise ConfigError("--pair", f"{new} {ref}", f"bags that are also training bags (--bags): not {b}")
            if not ((r / "metadata.yaml").is_file() or (r.suffix in (".mcap", ".db3") and r.is_file())):
                raise ConfigError("--pair", f"{new} {ref}", f"a reference bag for {b}: {r} is none")
            out.append((b, r))
    return out


def parse_widths(items: list[str]) -> dict[Modality, tuple[int, ...]]:
    """``["radar=32,64,128,192,256", ...]`` -> widths per modality (:class:`ConfigError` naming the bad item)."""
    out: dict[Modality, tuple[int, ...]] = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            m = Modality(name.strip())
            widths = tuple(int(v) for v in values.split(","))
        except ValueError:
            raise ConfigError("--widths", item, "MODALITY=W1,...,W5 with MODALITY camera, lidar or radar") from None
        if len(widths) != 5 or not all(1 <= w <= 1024 for w in widths):
            raise ConfigError("--widths", item, "five integer widths in 1..1024")
        out[m] = widths
    return out


def parse_size(text: str) -> tuple[int, int]:
    """``"160x120"`` -> (160, 120) (:class:`ConfigError` naming the value otherwise)."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or not all(16 <= v <= 4096 for v in size):
        raise ConfigError("--camera-size", text, "WIDTHxHEIGHT in pixels, each 16..4096, e.g. 160x120")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cmr_fusion_ros.training.models import DEFAULT_WIDTHS
    from cmr_fusion_ros.training.train import TrainConfig

    d = TrainConfig()
    parser.add_argument("--bags", type=Path, nargs="+", required=True,
                        help="bags, or folders of bags (one folder per place: its bags share the odometry frame)")
    parser.add_argument("--val-bags", type=Path, nargs="+", metavar="DATABASE QUERIES", default=None,
                        help="validation database and query bags, or several such pairs (recall averaged over the "
                             "pairs; default: the two first bags of the last folder, held out from training, when "
                             "there are several folders)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for checkpoints and the training log")
    parser.add_argument("--cache", type=Path, default=None, help="preprocessed-frame cache folder (default OUT/cache)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from the encoders in this folder (<modality>_encoder.pt, e.g. the shipped models/ "
                             "or an earlier --out) instead of random weights: fine-tuning on your own bags")
    parser.add_argument("--freeze", nargs="+", default=[], metavar="MODALITY", choices=[m.value for m in Modality],
                        help="keep these encoders as loaded from --init (no gradient) and train the others into "
                             "their space, e.g. --freeze camera lidar to train a new radar encoder")
    parser.add_argument("--anchor-bags", type=Path, nargs="+", default=None, metavar="BAG",
                        help="training bags (or folders of them, also given in --bags) whose embeddings are held near "
                             "the --anchor-models encoders' by a distillation term: fine-tune for a new rig while your "
                             "old rig's bags keep what the old models did on them")
    parser.add_argument("--anchor-models", type=Path, default=None, metavar="DIR",
                        help="the encoders the anchored bags are held to (<modality>_encoder.pt; default: --init)")
    parser.add_argument("--anchor-weight", type=float, default=1.0, metavar="W",
                        help="weight of the distillation term (mean 1 - cosine to the anchor encoders' embedding "
                             "over the anchored frames of a batch) against the contrastive loss (default 1)")
    parser.add_argument("--pair", nargs=2, action="append", type=Path, default=[], metavar=("BAGS", "REFERENCE"),
                        help="training bags (a bag or a folder of them, also in --bags) recorded beside reference bags "
                             "of a rig the --anchor-models know (the same drive: a new sensor set mounted next to the "
                             "old one, or the simulator's same seed with another rig): each frame is pulled towards "
                             "the anchor encoders' embedding of the reference frame of the same moment; folders pair "
                             "their bags by relative path; repeat for several pairs")
    parser.add_argument("--pair-weight", type=float, default=1.0, metavar="W",
                        help="weight of the paired distillation term (mean 1 - cosine to the anchor encoders' "
                             "embedding of the reference frames) against the contrastive loss (default 1)")
    parser.add_argument("--pair-tolerance", type=float, default=0.05, metavar="S",
                        help="a reference frame pairs with the training frame nearest in time within S seconds "
                             "(default 0.05)")
    parser.add_argument("--widths", action="append", default=[], metavar="MODALITY=W1,W2,W3,W4,W5",
                        help="channel widths of one encoder's five stages (default "
                             f"{','.join(map(str, DEFAULT_WIDTHS))}, or the --init checkpoint's); an encoder whose "
                             "widths differ from its --init checkpoint starts from random weights; repeat for "
                             "several modalities")
    parser.add_argument("--radar-scans", type=int, default=None, metavar="N",
                        help="radar input = each scan merged with N-1 earlier scans, moved by the odometry "
                             "(default: the shipped radar model's, 3; 1 = single scans)")
    parser.add_argument("--radar-scan-spacing", type=float, default=None, metavar="S",
                        help="seconds between the merged radar scans (default: the shipped model's, 0.5)")
    parser.add_argument("--lidar-occupancy", default=None, choices=["count", "binary"],
                        help="the LiDAR bird's-eye occupancy channel: count (log of the points per cell) or binary "
                             "(1 for a cell with a point: the same for a dense and a sparse LiDAR); default: the "
                             "shipped model's")
    parser.add_argument("--lidar-ground-clearance", type=float, default=None, metavar="M",
                        help="leave the points less than M metres above the scan's ground (10th height percentile "
                             "3-25 m away) out of the LiDAR bird's-eye grid (0: keep them; default: the shipped "
                             "model's); the front view keeps them")
    parser.add_argument("--camera-size", default=None, metavar="WxH",
                        help="camera input size in pixels (default 96x72); an --init camera encoder of another size "
                             "keeps its convolutions and gets its head resampled")
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the training frames (default {d.epochs})")
    parser.add_argument("--batch-anchors", type=int, default=d.batch_anchors,
                        help=f"anchor frames per batch; each brings a positive and a hard negative (default {d.batch_anchors})")
    parser.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch, help="0: one pass over the frames")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help=f"AdamW weight decay (default {d.weight_decay:g})")
    parser.add_argument("--dropout", type=float, default=d.dropout,
                        help=f"dropout before each encoder's projection head (default {d.dropout:g})")
    parser.add_argument("--shift-px", type=int, default=d.shift_px, help="random translation augmentation (pixels)")
    parser.add_argument("--cutout-p", type=float, default=d.cutout_p, help="random erasing probability per input")
    parser.add_argument("--pos-radius", type=float, default=d.pos_radius_m, help="positive within this (m)")
    parser.add_argument("--pos-max-yaw", type=float, default=d.pos_max_yaw_deg, metavar="DEG",
                        help="positives of pairs with a camera or radar must also face within DEG degrees of each "
                             "other (forward-looking sensors; LiDAR-LiDAR pairs take any heading; 180: any heading); "
                             f"default {d.pos_max_yaw_deg:g}")
    parser.add_argument("--neg-radius", type=float, default=d.neg_radius_m, help="negative beyond this (m)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help=f"seed of the initialisation, batches and augmentation (default {d.seed})")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    add_rig_arguments(parser)
    add_modalities_argument(parser)
    add_no_progress(parser)
    add_topic_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from cmr_fusion_ros.bag.inventory import bag_modalities, choose_modalities, parse_modalities
    from cmr_fusion_ros.core.errors import BagError
    from cmr_fusion_ros.core.preprocess import default_preprocessing, preprocessing_from_dict
    from cmr_fusion_ros.machine import machine_summary
    from cmr_fusion_ros.training.dataset import MODALITIES, load_frames
    from cmr_fusion_ros.training.models import checkpoint_path, load_checkpoint, resize_input, save_checkpoint
    from cmr_fusion_ros.training.report import plot_history
    from cmr_fusion_ros.training.train import Trainer, TrainConfig, config_dict, write_json

    cfg = TrainConfig(epochs=args.epochs, batch_anchors=args.batch_anchors, steps_per_epoch=args.steps_per_epoch,
                      lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout, shift_px=args.shift_px,
                      cutout_p=args.cutout_p, pos_radius_m=args.pos_radius, pos_max_yaw_deg=args.pos_max_yaw,
                      neg_radius_m=args.neg_radius, seed=args.seed, threads=args.threads, frozen=tuple(args.freeze),
                      anchor_weight=args.anchor_weight if args.anchor_bags else 0.0,
                      pair_weight=args.pair_weight if args.pair else 0.0)
    widths = parse_widths(args.widths)
    if cfg.frozen and args.init is None:
        raise ConfigError("--freeze", " ".join(args.freeze), "frozen encoders need --init (the weights they keep)")
    if args.val_bags is not None and len(args.val_bags) % 2:
        raise ConfigError("--val-bags", " ".join(map(str, args.val_bags)), "pairs of bags: DATABASE QUERIES ...")
    topics = topics_from_args(args)
    rig = rig_options_from_args(args)
    bags = expand_bags(args.bags)
    val_bags = list(args.val_bags) if args.val_bags else None
    if val_bags is None:
        folders = list(dict.fromkeys(b.resolve().parent for b in bags))
        last = [b for b in bags if b.resolve().parent == folders[-1]]
        if len(folders) > 1 and len(last) >= 2:
            val_bags = last[:2]
            bags = [b for b in bags if b.resolve().parent != folders[-1]]
    if not bags:
        raise BagError("--bags", "no training bags left")
    anchor_models = args.anchor_models or args.init
    anchored: set[Path] = set()
    if args.anchor_bags:
        if anchor_models is None:
            raise ConfigError("--anchor-bags", " ".join(map(str, args.anchor_bags)),
                              "anchored bags need --anchor-models or --init (the encoders they are held to)")
        anchored = {b.resolve() for b in expand_bags(args.anchor_bags)}
        missing = sorted(str(b) for b in anchored - {b.resolve() for b in bags})
        if missing:
            raise ConfigError("--anchor-bags", ", ".join(missing), "bags that are also training bags (--bags)")
    pairs = pair_bags(args.pair, bags)
    if pairs and anchor_models is None:
        raise ConfigError("--pair", " ".join(map(str, args.pair[0])),
                          "paired bags need --anchor-models or --init (the encoders that embed the reference frames)")
    if not (0 <= args.pair_tolerance <= 10):
        raise ConfigError("--pair-tolerance", args.pair_tolerance, "seconds in [0, 10]")
    val_set = {b.resolve() for b in val_bags or []}
    if any(b.resolve() in val_set for b in bags):
        raise BagError("--val-bags", "a validation bag is also a training bag")
    common = set(MODALITIES)
    for b in [*bags, *(val_bags or [])]:  # the modalities every bag holds
        common &= set(choose_modalities(bag_modalities(b, topics), None, str(b)))
    requested = parse_modalities(args.modalities)
    mods = choose_modalities(common, requested, "--bags/--val-bags (modalities common to all bags)")
    absent = tuple(m for m in MODALITIES if m not in mods)
    if absent and args.init is not None:  # kept as loaded: saved unchanged, their cards keep their history
        cfg = dataclasses.replace(cfg, frozen=tuple(dict.fromkeys((*cfg.frozen, *absent))))
    pre = {m: default_preprocessing(m) for m in MODALITIES}
    radar_changes = {k: v for k, v in (("scans", args.radar_scans), ("scan_spacing_s", args.radar_scan_spacing))
                     if v is not None}
    if args.camera_size is not None:
        width, height = parse_size(args.camera_size)
        pre[Modality.CAMERA] = dataclasses.replace(pre[Modality.CAMERA], width=width, height=height)
    if radar_changes:
        pre[Modality.RADAR] = dataclasses.replace(pre[Modality.RADAR], **radar_changes)
    lidar_changes = {k: v for k, v in (("occupancy", args.lidar_occupancy),
                                       ("ground_clearance_m", args.lidar_ground_clearance)) if v is not None}
    if lidar_changes:
        try:
            pre[Modality.LIDAR] = dataclasses.replace(pre[Modality.LIDAR], **lidar_changes)
        except ConfigError as err:
            raise ConfigError("--lidar-ground-clearance", args.lidar_ground_clearance, err.allowed) from None
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "cache"
    command = "cmr-fusion " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train"] else "cmr-fusion train"
    print(f"command: {command}")
    print(f"machine: {machine_summary()}")
    print(f"modalities: {', '.join(m.value for m in mods)}" + (
        f"; not trained: {', '.join(m.value for m in absent)} ("
        + ("kept as loaded from --init" if args.init is not None else "no checkpoint written") + ")" if absent else ""))
    dropped: dict[str, int] = {}
    rejected: dict[str, int] = {}
    with tqdm(desc="reading bags", unit=" msg", file=sys.stderr, disable=args.no_progress) as bar:
        train = load_frames(bags, pre, topics, cache_dir=cache, progress=bar.update, modalities=mods, dropped=dropped,
                            rig=rig, rejected=rejected)
        val_pairs = list(zip(val_bags[::2], val_bags[1::2])) if val_bags else []
        val = [
            (load_frames([db], pre, topics, cache_dir=cache, progress=bar.update, modalities=mods, rig=rig,
                         rejected=rejected),
             load_frames([q], pre, topics, cache_dir=cache, progress=bar.update, modalities=mods, rig=rig,
                         rejected=rejected))
            for db, q in val_pairs
        ] or None
    print(f"training frames: {len(train)} from {len(bags)} bags in {len(train.group_names)} place groups")
    anchor = None
    if anchored:  # load_frames keeps the order of the bags: bag index i is bags[i]
        flags = np.array([b.resolve() in anchored for b in bags])
        if len(train.bag_names) != len(bags):
            raise BagError("--anchor-bags", f"{len(bags)} training bags gave {len(train.bag_names)} bag names")
        anchor = flags[train.bag]
        print(f"anchored: {int(anchor.sum())} frames of {int(flags.sum())} bags held near {anchor_models}'s "
              f"embeddings (weight {cfg.anchor_weight:g})")
    if dropped:
        print(f"training samples skipped (no odometry pose: {pose_rule(args)}): "
              + ", ".join(f"{m} {n}" for m, n in dropped.items()))
    if rejected:
        print("messages the decoder rejected, skipped (bags read now, not from the cache): "
              + ", ".join(f"{k} {n}" for k, n in rejected.items()))
    for (db, q), (dbf, qf) in zip(val_pairs, val or []):
        print(f"validation: database {db} ({len(dbf)} frames), queries {q} ({len(qf)} frames)")
    start: dict = {}  # modality -> encoder to start from (from --init)
    if args.init is not None:
        from cmr_fusion_ros.core.errors import ModelError

        for m in MODALITIES:
            mod, model, init_pre = load_checkpoint(checkpoint_path(args.init, m))
            if mod is not m:
                raise ModelError(str(checkpoint_path(args.init, m)), f"is a {mod.value} encoder, not {m.value}")
            if preprocessing_from_dict(init_pre) != pre[m]:
                same_shape = tuple(model.input_shape) == pre[m].input_shape
                resizable = (init_pre["kind"] == pre[m].to_dict()["kind"]
                             and model.input_shape[0] == pre[m].input_shape[0])
                if m in cfg.frozen or not (same_shape or resizable):
                    raise ModelError(str(checkpoint_path(args.init, m)), "was trained with other preprocessing "
                                     f"({init_pre['params']}) than {pre[m].to_dict()['params']}")
                if not same_shape:
                    old_shape = tuple(model.input_shape)
                    model = resize_input(model, pre[m].input_shape)
                    print(f"{m.value}: {args.init} was trained on {old_shape} inputs, not {pre[m].input_shape}: its "
                          f"convolutions are the starting point, its head resampled to the final map {model.final_map}")
                else:
                    print(f"{m.value}: {args.init} was trained with other preprocessing (same input shape): "
                          "its weights are the starting point")
            if m in widths and tuple(model.widths) != widths[m]:
                if m in cfg.frozen:
                    raise ConfigError(f"--widths {m.value}", widths[m], f"the frozen checkpoint's {model.widths}")
                print(f"{m.value}: widths {widths[m]} differ from {args.init}'s {model.widths}: random start")
                continue
            widths.setdefault(m, tuple(model.widths))  # fine-tuning keeps the checkpoint's architecture
            start[m] = model
    trainer = Trainer(cfg, {m: pre[m].input_shape for m in MODALITIES}, widths,
                      mirror={m: pre[m].mirror_segments for m in MODALITIES}, modalities=mods)
    for m, model in start.items():
        trainer.load(m, model)
    if args.init is not None:
        print(f"initialised from {args.init}")
    if anchor is not None or pairs:
        teachers = {}
        for m in trainer.trainable:
            mod, model, _ = load_checkpoint(checkpoint_path(anchor_models, m))
            if mod is not m:
                raise ConfigError("--anchor-models", str(checkpoint_path(anchor_models, m)), f"a {m.value} encoder")
            teachers[m] = model
        trainer.set_teachers(teachers)
    paired = None
    if pairs:
        from cmr_fusion_ros.training.train import paired_targets

        index = {b.resolve(): i for i, b in enumerate(bags)}
        refs = []
        with tqdm(desc="reading reference bags", unit=" msg", file=sys.stderr, disable=args.no_progress) as bar:
            for new, ref in pairs:
                refs.append((index[new.resolve()], load_frames([ref], pre, topics, cache_dir=cache,
                                                               progress=bar.update, modalities=mods, rig=rig,
                                                               rejected=rejected)))
        paired = paired_targets(trainer.teachers, train, refs, trainer.mirror,
                                tolerance_ns=int(round(args.pair_tolerance * 1e9)))
        paired_bags = {index[new.resolve()] for new, _ in pairs}
        in_pairs = int(np.isin(train.bag, list(paired_bags)).sum())
        if paired.count == 0:
            raise BagError("--pair", f"no frame of the {len(pairs)} paired bags has a reference frame within "
                           f"{args.pair_tolerance:g} s (--pair-tolerance)")
        print(f"paired: {paired.count} of {in_pairs} frames of {len(pairs)} bags pulled towards {anchor_models}'s "
              f"embeddings of their reference frames (weight {cfg.pair_weight:g}; "
              f"{in_pairs - paired.count} without a reference frame within {args.pair_tolerance:g} s)")
    if cfg.frozen:
        print(f"frozen: {', '.join(m.value for m in cfg.frozen)}; training: {', '.join(m.value for m in trainer.trainable)}")

    def on_epoch(epoch: int, e: dict) -> None:
        rec = e["val_recall@1"]
        txt = " ".join(f"{k}={v:.2f}" for k, v in rec.items())
        mean = f" mean={e['val_mean_recall@1']:.3f}" if rec else ""
        distill = f" anchor={e['anchor_loss']:.4f}" if e.get("anchor_loss") is not None else ""
        distill += f" pair={e['pair_loss']:.4f}" if e.get("pair_loss") is not None else ""
        tqdm.write(f"epoch {epoch}/{cfg.epochs} loss={e['loss']:.4f}{distill} T={e['temperature']:.3f} {e['seconds']:.0f}s"
                   f"{mean}{' *' if e.get('best') else ''}" + (f"\n  val R@1: {txt}" if rec else ""), file=sys.stdout)
        sys.stdout.flush()

    def progress(epoch: int, steps: int):
        return tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr,
                    disable=args.no_progress)

    history = trainer.fit(train, val, on_epoch=on_epoch, progress=progress, anchor=anchor, paired=paired)
    saved = [m for m in MODALITIES if m in mods or args.init is not None]
    for m in saved:
        save_checkpoint(checkpoint_path(args.out, m), m, trainer.models[m], pre[m].to_dict())
    log = {
        "command": command,
        "machine": machine_summary(),
        "seed": cfg.seed,
        "init": str(args.init) if args.init else None,
        "anchor_models": str(anchor_models) if anchored or pairs else None,
        "anchor_bags": sorted(str(b) for b in bags if b.resolve() in anchored),
        "pairs": [[str(a), str(b)] for a, b in pairs],
        "paired_frames": paired.count if paired is not None else 0,
        "modalities": [m.value for m in mods],
        "widths": {m.value: list(trainer.models[m].widths) for m in MODALITIES},
        "config": config_dict(cfg),
        "train_bags": [str(b) for b in bags],
        "val_bags": [str(b) for b in val_bags] if val_bags else None,
        "train_frames": len(train),
        "history": history,
    }
    write_json(args.out / "training.json", log)
    plot_history(history, args.out / "training.png")
    print(f"wrote {', '.join(str(checkpoint_path(args.out, m)) for m in saved)}, "
          f"{args.out / 'training.json'}, {args.out / 'training.png'}")
    return 0
