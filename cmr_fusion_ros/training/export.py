"""ONNX export of trained encoders, with a parity check against torch and a model card beside each model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmr_fusion_ros.core.encoder import ModelCard, card_path, file_sha256, model_path
from cmr_fusion_ros.core.errors import ModelError
from cmr_fusion_ros.core.preprocess import Preprocessing
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.training.models import INPUT_NAME, OUTPUT_NAME, ConvEncoder

__all__ = ["PARITY_TOLERANCE", "card_markdown", "export_all", "export_encoder", "parity_check", "parity_inputs", "write_card"]

PARITY_TOLERANCE = 1e-4


def parity_inputs(input_shape: tuple[int, int, int], n: int = 4, seed: int = 0) -> np.ndarray:
    """Fixed, seeded inputs for the torch-vs-ONNX comparison (standard normal, like normalised sensor data)."""
    return np.random.default_rng(seed).standard_normal((n, *input_shape)).astype(np.float32)


def parity_check(model: ConvEncoder, onnx_file: str | Path, inputs: np.ndarray) -> float:
    """Max abs difference between torch and onnxruntime outputs on ``inputs``; ModelError above the tolerance."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(inputs)).numpy()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
    diff = float(np.max(np.abs(ref - got)))
    if not diff <= PARITY_TOLERANCE:
        raise ModelError(str(onnx_file), f"ONNX output differs from torch by {diff:.3g} > {PARITY_TOLERANCE}")
    return diff


def export_encoder(model: ConvEncoder, onnx_file: str | Path) -> None:
    """Export with a dynamic batch dimension, input ``input`` and output ``embedding`` (opset 17).

    Uses torch's TorchScript-based exporter (about 20x faster than the dynamo exporter for these plain CNNs, and
    the result is checked by :func:`parity_check` anyway); falls back to the dynamo exporter if it is unavailable.
    """
    model = model.eval()
    onnx_file = Path(onnx_file)
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros((2, *model.input_shape), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (dummy,),
                str(onnx_file),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        except (TypeError, RuntimeError, NotImplementedError):
            torch.onnx.export(
                model,
                (dummy,),
                str(onnx_file),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                dynamo=True,
                external_data=False,
                verbose=False,
            )


def write_card(
    onnx_file: str | Path,
    modality: Modality,
    pre: Preprocessing,
    dim: int,
    *,
    training: dict[str, Any],
    metrics: dict[str, Any],
    latency_ms: dict[str, Any],
) -> ModelCard:
    """Write ``<model>.json`` (read by the runtime) and ``<model>.md`` (for people) beside the model."""
    card = ModelCard(
        modality=modality,
        input_name=INPUT_NAME,
        input_shape=tuple(pre.input_shape),
        output_name=OUTPUT_NAME,
        embedding_dim=dim,
        preprocessing=pre.to_dict(),
        sha256=file_sha256(onnx_file),
        training=training,
        metrics=metrics,
        latency_ms=latency_ms,
    )
    path = card_path(onnx_file)
    path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=False) + "\n")
    path.with_suffix(".md").write_text(card_markdown(card, Path(onnx_file).name))
    return card


def card_markdown(card: ModelCard, filename: str) -> str:
    d = card.to_dict()
    lines = [
        f"# {filename}: {card.modality.value} encoder",
        "",
        f"- modality: `{card.modality.value}`",
        f"- input: `{card.input_name}` float32 NCHW `[batch, {', '.join(map(str, card.input_shape))}]`",
        f"- output: `{card.output_name}` float32 `[batch, {card.embedding_dim}]`, L2-normalised",
        f"- sha256: `{card.sha256}`",
        "",
        "## Preprocessing (`cmr_fusion_ros.core.preprocess`)",
        "",
        "```json",
        json.dumps(d["preprocessing"], indent=2),
        "```",
        "",
        "## Training",
        "",
        "```json",
        json.dumps(card.training, indent=2),
        "```",
        "",
        "## Measured recall",
        "",
    ]
    if card.metrics:
        lines += ["```json", json.dumps(card.metrics, indent=2), "```"]
    else:
        lines.append("not measured")
    lines += ["", "## Latency (onnxruntime, CPU)", ""]
    if card.latency_ms:
        lines += ["```json", json.dumps(card.latency_ms, indent=2), "```"]
    else:
        lines.append("not measured")
    return "\n".join(lines) + "\n"


def export_all(
    encoders: dict[Modality, ConvEncoder],
    preprocessing: dict[Modality, Preprocessing],
    out_dir: str | Path,
    *,
    training: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    latency_fn: Any = None,
    training_for: dict[Modality, dict[str, Any]] | None = None,
) -> dict[Modality, dict[str, Any]]:
    """Export every encoder into ``out_dir`` with parity check and card. Returns per modality the file, the parity
    difference and the latency. ``latency_fn(onnx_file) -> dict`` measures latency (skipped when None);
    ``training_for`` replaces ``training`` for some modalities (e.g. an encoder kept frozen keeps its own history)."""
    results: dict[Modality, dict[str, Any]] = {}
    for mod, model in encoders.items():
        pre = preprocessing[mod]
        if tuple(model.input_shape) != tuple(pre.input_shape):
            raise ModelError(mod.value, f"model input {model.input_shape} differs from preprocessing {pre.input_shape}")
        onnx_file = model_path(out_dir, mod)
        export_encoder(model, onnx_file)
        diff = parity_check(model, onnx_file, parity_inputs(pre.input_shape))
        own = (training_for or {}).get(mod, training)
        card_args = dict(training={**own, "parity_max_abs_diff": diff}, metrics=dict(metrics or {}))
        write_card(onnx_file, mod, pre, model.dim, latency_ms={}, **card_args)
        latency = latency_fn(onnx_file) if latency_fn is not None else {}  # the runtime loads the model with its card
        if latency:
            write_card(onnx_file, mod, pre, model.dim, latency_ms=latency, **card_args)
        results[mod] = {
            "file": str(onnx_file),
            "parity_max_abs_diff": diff,
            "latency_ms": latency,
            "sha256": file_sha256(onnx_file),
        }
    return results
