"""ONNX runtime encoders: one per modality, each with a model card (JSON beside the ``.onnx`` file).

The card names the modality, the input (name, shape ``[batch, C, H, W]``, dtype), the output (name, embedding
size), the preprocessing parameters, the training data and the measured figures. :class:`OnnxEncoder` checks the
ONNX graph against its card when it loads and raises :class:`ModelError` on any mismatch, picks execution providers
from :class:`EncoderConfig`, runs in batches, and returns L2-normalised float32 embeddings.

Execution providers: the configured list is honoured in its order (``encoders.providers``), the CPU provider is
always the last resort. A provider this onnxruntime lacks (the CPU package has no CUDA; ``pip install .[gpu]``
installs ``onnxruntime-gpu``), or one that is there but could not start (no GPU, no CUDA libraries), leaves the
encoder on the providers that did start: :attr:`OnnxEncoder.providers` says which, :attr:`OnnxEncoder.fallback`
which requested ones are missing, and :func:`load_encoders` warns once for all encoders
(:class:`ProviderFallbackWarning`, :func:`provider_fallback_message`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError, ModelError
from cmr_fusion_ros.core.preprocess import Preprocessing, batch as preprocess_batch, preprocessing_from_dict
from cmr_fusion_ros.core.types import Modality

__all__ = [
    "CARD_FORMAT",
    "EncoderConfig",
    "ModelCard",
    "OnnxEncoder",
    "ProviderFallbackWarning",
    "card_path",
    "file_sha256",
    "load_card",
    "model_path",
    "load_encoders",
    "provider_fallback_message",
    "providers_in_use",
]

CARD_FORMAT = "cmr_fusion_model_card/1"
KNOWN_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class ProviderFallbackWarning(RuntimeWarning):
    """A requested execution provider is not available; the encoder runs on the providers that are."""


def _onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError("onnxruntime", "not installed: pip install 'cmr_fusion_ros[cpu]' (onnxruntime) or "
                                        "'cmr_fusion_ros[gpu]' (onnxruntime-gpu), never both") from err
    return ort


def providers_in_use(encoders: Any) -> str:
    """``camera: CUDAExecutionProvider, CPUExecutionProvider; lidar: ...`` for the encoders of a mapping (modality ->
    encoder) that report their providers (for logs and diagnostics)."""
    return "; ".join(f"{Modality(m).value}: {', '.join(e.providers)}" for m, e in encoders.items()
                     if getattr(e, "providers", None))


def provider_fallback_message(encoders: Sequence["OnnxEncoder"]) -> str:
    """One sentence for all ``encoders`` that did not get every requested provider ('' when all did)."""
    fell = [e for e in encoders if e.fallback]
    if not fell:
        return ""
    ort = _onnxruntime()
    missing = sorted({p for e in fell for p in e.fallback})
    names = ", ".join(f"{e.modality.value} on {list(e.providers)}" for e in fell)
    return (f"execution providers {missing} requested but not running ({names}); onnxruntime "
            f"{ort.__version__} offers {ort.get_available_providers()}: install the GPU build with "
            "pip install '.[gpu]' (onnxruntime-gpu) on a machine with CUDA, or set encoders.providers")


def model_path(models_dir: str | Path, modality: Modality | str) -> Path:
    """The conventional file name of a modality's model inside a models folder."""
    return Path(models_dir) / f"{Modality(modality).value}_encoder.onnx"


def card_path(model: str | Path) -> Path:
    """The card JSON beside a model file."""
    return Path(model).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What a model promises: checked against the ONNX graph at load time."""

    modality: Modality
    input_name: str
    input_shape: tuple[int, int, int]
    output_name: str
    embedding_dim: int
    preprocessing: dict[str, Any]
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, Any] = field(default_factory=dict)
    # what the training data looked like (core.domain.InputRanges.to_dict): `cmr-fusion doctor` compares bags with it
    input_ranges: dict[str, Any] = field(default_factory=dict)
    # P(true revisit | cosine) per match modality (core.calibration.ScoreCalibration.card_block):
    # written by `cmr-fusion calibrate`
    score_calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "modality": self.modality.value,
            "input": {
                "name": self.input_name,
                "shape": ["batch", *self.input_shape],
                "dtype": "float32",
                "layout": "NCHW",
            },
            "output": {"name": self.output_name, "shape": ["batch", self.embedding_dim], "l2_normalised": True},
            "embedding_dim": self.embedding_dim,
            "preprocessing": self.preprocessing,
            "sha256": self.sha256,
            "training": self.training,
            "metrics": self.metrics,
            "latency_ms": self.latency_ms,
            **({"input_ranges": self.input_ranges} if self.input_ranges else {}),
            **({"score_calibration": self.score_calibration} if self.score_calibration else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "model card") -> "ModelCard":
        def get(key: str, parent: dict[str, Any] = d, prefix: str = "") -> Any:
            if not isinstance(parent, dict) or key not in parent:
                raise ModelError(source, f"card has no '{prefix}{key}'")
            return parent[key]

        if d.get("format") != CARD_FORMAT:
            raise ModelError(source, f"card format {d.get('format')!r} is not {CARD_FORMAT!r}")
        try:
            modality = Modality.parse(get("modality"))
        except ConfigError as err:
            raise ModelError(source, str(err)) from err
        inp, out = get("input"), get("output")
        shape = get("shape", inp, "input.")
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape[1:])):
            raise ModelError(source, f"input.shape {shape!r} is not [batch, C, H, W] with positive C, H, W")
        if get("dtype", inp, "input.") != "float32":
            raise ModelError(source, f"input.dtype {inp['dtype']!r} is not 'float32'")
        dim = get("embedding_dim")
        if not (isinstance(dim, int) and dim > 0):
            raise ModelError(source, f"embedding_dim {dim!r} is not a positive integer")
        pre = get("preprocessing")
        try:
            built = preprocessing_from_dict(pre)
        except ConfigError as err:
            raise ModelError(source, f"preprocessing: {err}") from err
        if built.modality is not modality:
            raise ModelError(source, f"preprocessing is for {built.modality.value}, the card for {modality.value}")
        if tuple(built.input_shape) != tuple(shape[1:]):
            raise ModelError(source, f"preprocessing gives {built.input_shape}, input.shape says {shape[1:]}")
        return cls(
            modality=modality,
            input_name=str(get("name", inp, "input.")),
            input_shape=(int(shape[1]), int(shape[2]), int(shape[3])),
            output_name=str(get("name", out, "output.")),
            embedding_dim=int(dim),
            preprocessing=pre,
            sha256=str(d.get("sha256", "")),
            training=dict(d.get("training") or {}),
            metrics=dict(d.get("metrics") or {}),
            latency_ms=dict(d.get("latency_ms") or {}),
            input_ranges=dict(d.get("input_ranges") or {}),
            score_calibration=dict(d.get("score_calibration") or {}),
        )

    def build_preprocessing(self) -> Preprocessing:
        return preprocessing_from_dict(self.preprocessing)


def load_card(model: str | Path) -> ModelCard:
    """Read and validate the card beside ``model``."""
    path = card_path(model)
    if not path.is_file():
        raise ModelError(str(model), f"no model card at {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(str(path), f"unreadable card: {err}") from err
    if not isinstance(data, dict):
        raise ModelError(str(path), "card is not a JSON object")
    return ModelCard.from_dict(data, source=str(path))


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    """How to run one encoder.

    ``providers``: onnxruntime execution providers in order of preference; unavailable ones are dropped with a
    :class:`ProviderFallbackWarning` and the CPU provider is always appended. ``intra_op_threads`` /
    ``inter_op_threads``: onnxruntime thread pools (0 lets onnxruntime decide). ``batch_size``: largest batch sent
    in one run. ``warmup_runs``: runs on zeros at load time so the first real call is not slow. ``verify_sha256``:
    compare the model file's hash with the card's.
    """

    model_path: str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    batch_size: int = 8
    warmup_runs: int = 2
    verify_sha256: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model_path, (str, Path)) or not str(self.model_path):
            raise ConfigError("model_path", self.model_path, "a path to an .onnx file")
        object.__setattr__(self, "model_path", str(self.model_path))
        provs = (self.providers,) if isinstance(self.providers, str) else tuple(self.providers)
        if not provs:
            raise ConfigError("providers", self.providers, "a non-empty list of " + " | ".join(KNOWN_PROVIDERS))
        for p in provs:
            if p not in KNOWN_PROVIDERS:
                raise ConfigError("providers", p, " | ".join(KNOWN_PROVIDERS))
        object.__setattr__(self, "providers", provs)
        for key in ("intra_op_threads", "inter_op_threads"):
            v = getattr(self, key)
            if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 256):
                raise ConfigError(key, v, "an integer in 0..256 (0 = onnxruntime default)")
        if not (isinstance(self.batch_size, int) and not isinstance(self.batch_size, bool) and 1 <= self.batch_size <= 4096):
            raise ConfigError("batch_size", self.batch_size, "an integer in 1..4096")
        if not (isinstance(self.warmup_runs, int) and not isinstance(self.warmup_runs, bool) and 0 <= self.warmup_runs <= 100):
            raise ConfigError("warmup_runs", self.warmup_runs, "an integer in 0..100")
        if not isinstance(self.verify_sha256, bool):
            raise ConfigError("verify_sha256", self.verify_sha256, "true | false")


def _resolve_providers(requested: Sequence[str], available: Sequence[str]) -> tuple[list[str], list[str]]:
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen, missing


class OnnxEncoder:
    """One modality's ONNX encoder, validated against its card."""

    def __init__(self, config: EncoderConfig, *, warn: bool = True) -> None:
        ort = _onnxruntime()
        self.config = config
        path = Path(config.model_path)
        if not path.is_file():
            raise ModelError(str(path), "file not found")
        self.card = load_card(path)
        if config.verify_sha256 and self.card.sha256 and file_sha256(path) != self.card.sha256:
            raise ModelError(str(path), "sha256 of the file differs from the card's: the model and card do not belong together")
        self.modality = self.card.modality
        self.preprocessing = self.card.build_preprocessing()
        self.dim = self.card.embedding_dim

        providers, _ = _resolve_providers(config.providers, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = config.intra_op_threads
        opts.inter_op_num_threads = config.inter_op_threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(str(path), f"onnxruntime cannot load it: {err}") from err
        self.providers = tuple(self.session.get_providers())  # the providers that started, in order
        # requested but not running: absent from this onnxruntime, or present but failed to start (no GPU)
        self.fallback = tuple(p for p in config.providers if p not in self.providers)
        if warn and self.fallback:
            warnings.warn(provider_fallback_message([self]), ProviderFallbackWarning, stacklevel=2)
        self._validate(path)
        for _ in range(config.warmup_runs):
            self._run(np.zeros((1, *self.card.input_shape), dtype=np.float32))
        # Does the graph end in an L2 normalisation (the exported ones do)? Then encode_tensors need not normalise.
        probe = self._run(np.random.default_rng(0).normal(size=(2, *self.card.input_shape)).astype(np.float32))
        self._graph_normalises = bool(np.all(np.abs(np.einsum("ij,ij->i", probe, probe) - 1.0) < 1e-4))

    def _validate(self, path: Path) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(str(path), f"expected 1 input, the graph has {[i.name for i in inputs]}")
        if len(outputs) != 1:
            raise ModelError(str(path), f"expected 1 output, the graph has {[o.name for o in outputs]}")
        inp, out = inputs[0], outputs[0]
        if inp.name != self.card.input_name:
            raise ModelError(str(path), f"input is named {inp.name!r}, the card says {self.card.input_name!r}")
        if inp.type != "tensor(float)":
            raise ModelError(str(path), f"input type is {inp.type}, the card says float32")
        if len(inp.shape) != 4 or [int(s) if isinstance(s, int) else None for s in inp.shape[1:]] != list(
            self.card.input_shape
        ):
            raise ModelError(str(path), f"input shape is {inp.shape}, the card says [batch, {', '.join(map(str, self.card.input_shape))}]")
        if isinstance(inp.shape[0], int):
            raise ModelError(str(path), f"input batch dimension is fixed at {inp.shape[0]}; expected a dynamic batch")
        if out.name != self.card.output_name:
            raise ModelError(str(path), f"output is named {out.name!r}, the card says {self.card.output_name!r}")
        if len(out.shape) != 2 or out.shape[1] != self.card.embedding_dim:
            raise ModelError(str(path), f"output shape is {out.shape}, the card says [batch, {self.card.embedding_dim}]")

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.card.output_name], {self.card.input_name: x})[0]

    def encode_tensors(self, x: np.ndarray) -> np.ndarray:
        """Embed preprocessed tensors ``(N, C, H, W)`` float32 -> ``(N, dim)`` float32, L2-normalised."""
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != self.card.input_shape:
            raise ModelError(
                self.config.model_path, f"got input of shape {x.shape}, expected (N, {', '.join(map(str, self.card.input_shape))})"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        bs = self.config.batch_size
        if x.shape[0] <= bs:  # the common case: one run, no copy
            out = self._run(x)
        else:
            out = np.concatenate([self._run(x[start : start + bs]) for start in range(0, x.shape[0], bs)])
        if self._graph_normalises:  # checked once at load time
            return out
        return out / np.sqrt(np.maximum(np.einsum("ij,ij->i", out, out), 1e-24))[:, None]

    def encode(self, items: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess raw sensor arrays with the card's preprocessing and embed them."""
        if len(items) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self.encode_tensors(preprocess_batch(self.preprocessing, items))


def load_encoders(
    models_dir: str | Path | None = None,
    modalities: Sequence[Modality | str] = tuple(Modality),
    **config: Any,
) -> dict[Modality, OnnxEncoder]:
    """One encoder per modality from ``models_dir`` (default: ``cmr_fusion_ros.paths.models_dir()``); one
    :class:`ProviderFallbackWarning` for all of them when requested providers are not running."""
    if models_dir is None:
        from cmr_fusion_ros.paths import models_dir as default_models_dir

        models_dir = default_models_dir()
    out: dict[Modality, OnnxEncoder] = {}
    for m in modalities:
        mod = Modality(m)
        out[mod] = OnnxEncoder(EncoderConfig(model_path=str(model_path(models_dir, mod)), **config), warn=False)
    if message := provider_fallback_message(list(out.values())):
        warnings.warn(message, ProviderFallbackWarning, stacklevel=2)
    return out
