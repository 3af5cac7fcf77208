"""Small per-modality CNN encoders into one L2-normalised embedding space.

Each encoder maps a ``(N, C, H, W)`` float32 tensor (from ``cmr_fusion_ros.core.preprocess``) to ``(N, dim)``
unit vectors. The nets are deliberately small (about 1 ms per sample with onnxruntime on one CPU core, and cheap
enough to train on two shared CPU cores): five stride-2 stages of conv-BN-ReLU, one more stride-1 conv-BN-ReLU at
the end, then a flatten of the small final
map (keeps the spatial layout: what is ahead versus behind matters when matching a forward camera to a 360 degree
LiDAR) and a linear projection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cmr_fusion_ros.core.errors import ModelError
from cmr_fusion_ros.core.types import Modality

__all__ = [
    "ConvEncoder",
    "DEFAULT_WIDTHS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "build_encoder",
    "checkpoint_path",
    "load_checkpoint",
    "resize_input",
    "save_checkpoint",
]

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


DEFAULT_WIDTHS = (16, 32, 64, 96, 128)


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvEncoder(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        dim: int = 256,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        layers: list[nn.Module] = []
        cin = c
        for i, width in enumerate(widths):
            layers += _block(cin, width, 2)
            if i == len(widths) - 1:
                layers += _block(width, width, 1)
            cin = width
            h, w = (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin * h * w, dim)
        self.input_shape = tuple(input_shape)
        self.final_map = (h, w)  # rows and columns of the last feature map (the head's spatial layout)
        self.widths = tuple(widths)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        f = self.dropout(torch.flatten(f, 1))
        return F.normalize(self.head(f), dim=1, eps=1e-8)


def build_encoder(
    modality: Modality, input_shape: tuple[int, int, int], dim: int = 256, widths: tuple[int, ...] | None = None
) -> ConvEncoder:
    """The encoder used for ``modality`` (same architecture for all three; the input shape differs; ``widths``: the
    channels of the five stages, default :data:`DEFAULT_WIDTHS`)."""
    Modality(modality)
    return ConvEncoder(input_shape, dim=dim, widths=tuple(widths or DEFAULT_WIDTHS))


def resize_input(model: ConvEncoder, input_shape: tuple[int, int, int]) -> ConvEncoder:
    """A copy of ``model`` for inputs of another height and width (same channels): the convolutions are reused as
    they are, the linear head is resampled (bilinear, over the final map's rows and columns) to the new map size and
    scaled by the ratio of the map sizes, so the copy starts close to what the model computes on a resized input.
    The starting point for fine-tuning an encoder at a higher camera resolution."""
    c, h, w = (int(v) for v in input_shape)
    if c != model.input_shape[0]:
        raise ModelError("resize_input", f"{c} input channels; the model has {model.input_shape[0]}")
    new = ConvEncoder((c, h, w), dim=model.dim, widths=model.widths, dropout=float(model.dropout.p))
    new.features.load_state_dict(model.features.state_dict())
    cin = model.widths[-1]
    old_w = model.head.weight.detach().reshape(model.dim, cin, *model.final_map)
    fh, fw = new.final_map
    scale = old_w.shape[2] * old_w.shape[3] / (fh * fw)
    resized = F.interpolate(old_w, size=(fh, fw), mode="bilinear", align_corners=True) * scale
    with torch.no_grad():
        new.head.weight.copy_(resized.reshape(model.dim, -1))
        new.head.bias.copy_(model.head.bias)
    return new.train(model.training)


def checkpoint_path(folder: str | Path, modality: Modality | str) -> Path:
    return Path(folder) / f"{Modality(modality).value}_encoder.pt"


def save_checkpoint(path: str | Path, modality: Modality, model: ConvEncoder, preprocessing: dict[str, Any]) -> None:
    """Save one encoder (weights + what is needed to rebuild it) to ``path``."""
    torch.save(
        {
            "modality": Modality(modality).value,
            "input_shape": list(model.input_shape),
            "dim": model.dim,
            "widths": list(model.widths),
            "preprocessing": preprocessing,
            "state_dict": model.state_dict(),
        },
        str(path),
    )


def load_checkpoint(path: str | Path) -> tuple[Modality, ConvEncoder, dict[str, Any]]:
    """Rebuild an encoder saved by :func:`save_checkpoint` (in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(str(path), "checkpoint not found")
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
        model = ConvEncoder(tuple(ck["input_shape"]), dim=int(ck["dim"]), widths=tuple(ck["widths"]))
        model.load_state_dict(ck["state_dict"])
    except (OSError, KeyError, RuntimeError, ValueError) as err:
        raise ModelError(str(path), f"unreadable checkpoint: {err}") from err
    return Modality(ck["modality"]), model.eval(), dict(ck["preprocessing"])
