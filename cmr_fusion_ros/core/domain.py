"""Is this data like the data the encoders were trained on? Input statistics, training ranges, embedding spread.

Per frame, :func:`frame_stats` measures what the preprocessing does not absorb:

- camera: image ``width``, ``height`` (pixels) and, from ``CameraInfo``, the horizontal field of view ``hfov_deg``;
- LiDAR: ``points`` per scan, ``intensity_p95`` (the scale of the intensity field), ``ground_z_m`` (5th percentile of
  z over points 3-40 m away horizontally: the ground in the sensor frame, minus the mount height), ``elev_min_deg`` /
  ``elev_max_deg`` (0.5th / 99.5th percentile of the elevation angles: the vertical field of view);
- radar: ``points`` per scan, ``azimuth_span_deg`` (1st-99th percentile of the azimuths: the field of view),
  ``range_p95_m``.

:class:`InputRanges` holds, per modality, the range of each statistic's median over a bag that the training data
covered (measured on simulated training bags, widened by a margin, stored in each model card's ``input_ranges``)
and the embedding spread of that data (mean cosine between different frames; with odometry, only between frames more
than 20 m apart). :func:`check_modality` compares a
bag's statistics and spread with them: a collapsed spread (every frame embedded alike) means the encoder does not
tell this data's places apart. :class:`DomainMonitor` is the same check on a live stream's first frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.preprocess import ground_height
from cmr_fusion_ros.core.types import Modality

__all__ = [
    "FEATURES",
    "Finding",
    "InputRanges",
    "DomainMonitor",
    "ModalityVerdict",
    "check_modality",
    "derive_ranges",
    "frame_stats",
    "mean_pairwise_cosine",
    "monitor_for",
    "ranges_from_cards",
]

# statistic -> (unit, relative margin, absolute margin) widening the training range when it is derived
FEATURES: dict[Modality, dict[str, tuple[str, float, float]]] = {
    Modality.CAMERA: {"width": ("px", 0.25, 0.0), "height": ("px", 0.25, 0.0), "hfov_deg": ("deg", 0.0, 15.0)},
    Modality.LIDAR: {"points": ("", 0.5, 0.0), "intensity_p95": ("", 0.5, 0.0), "ground_z_m": ("m", 0.0, 0.5),
                     "elev_min_deg": ("deg", 0.0, 7.0), "elev_max_deg": ("deg", 0.0, 7.0)},
    Modality.RADAR: {"points": ("", 0.5, 0.0), "azimuth_span_deg": ("deg", 0.0, 25.0), "range_p95_m": ("m", 0.5, 0.0)},
}
SPREAD_MARGIN = 0.25  # a bag whose mean cosine between frames exceeds the training data's by more: collapsed
SPREAD_MIN_DISTANCE_M = 20.0  # with odometry, the spread is measured between frames at least this far apart


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else float("nan")


def frame_stats(modality: Modality, data: Any, *, hfov_deg: float | None = None,
                reduction: int = 1) -> dict[str, float]:
    """The statistics of one decoded frame (camera: H x W x 3 image; LiDAR/radar: structured point array).
    ``reduction``: a camera JPEG decoded at 1/``reduction`` of its size (``Frame.reduction``): the sensor's image
    size is measured, not the decoded one."""
    m = Modality(modality)
    if m is Modality.CAMERA:
        h, w = np.asarray(data).shape[:2]
        out = {"width": float(w * reduction), "height": float(h * reduction)}
        if hfov_deg is not None:
            out["hfov_deg"] = float(hfov_deg)
        return out
    names = data.dtype.names or ()
    x, y, z = (np.asarray(data[k], np.float64) for k in ("x", "y", "z"))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[ok], y[ok], z[ok]
    r = np.hypot(x, y)
    if m is Modality.LIDAR:
        out = {"points": float(x.size)}
        if "intensity" in names:
            out["intensity_p95"] = _pct(np.asarray(data["intensity"], np.float64)[ok], 95)
        ground = ground_height(np.stack([x, y, z]), range_m=(3.0, 40.0), percentile=5, min_points=1)
        out["ground_z_m"] = float("nan") if ground is None else ground
        elev = np.degrees(np.arctan2(z, r))
        out["elev_min_deg"], out["elev_max_deg"] = _pct(elev, 0.5), _pct(elev, 99.5)
        return out
    az = np.degrees(np.arctan2(y, x))
    return {"points": float(x.size), "azimuth_span_deg": _pct(az, 99) - _pct(az, 1) if az.size >= 2 else float("nan"),
            "range_p95_m": _pct(r, 95)}


def hfov_from_camera_info(width: int, fx: float) -> float | None:
    """Horizontal field of view (degrees) of a pinhole camera; None when ``fx`` is not usable."""
    if not (math.isfinite(fx) and fx > 0 and width > 0):
        return None
    return math.degrees(2.0 * math.atan(width / (2.0 * fx)))


def mean_pairwise_cosine(embeddings: np.ndarray, positions: np.ndarray | None = None,
                         min_distance_m: float = SPREAD_MIN_DISTANCE_M) -> float:
    """Mean cosine similarity between different rows; with ``positions`` (N, 2 or 3), only between frames more than
    ``min_distance_m`` apart (different places: a robot standing still must not look collapsed). NaN when no pair
    qualifies."""
    e = np.asarray(embeddings, np.float64)
    n = e.shape[0]
    if n < 2:
        return float("nan")
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    if positions is None:
        s = e.sum(axis=0)
        return float((s @ s - n) / (n * (n - 1)))  # sum over i != j of e_i . e_j, unit rows
    p = np.asarray(positions, np.float64)[:, :2]
    far = np.linalg.norm(p[:, None] - p[None], axis=-1) > min_distance_m
    return float((e @ e.T)[far].mean()) if far.any() else float("nan")


@dataclass(frozen=True)
class InputRanges:
    """Per statistic the [low, high] range of a bag's median that the training data covered, and the training data's
    embedding spread. ``source``: how the ranges were measured (a command)."""

    modality: Modality
    ranges: dict[str, tuple[float, float]]
    mean_cosine: float | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": {k: [round(a, 4), round(b, 4)] for k, (a, b) in self.ranges.items()},
                **({"embedding_mean_cosine": round(self.mean_cosine, 4)} if self.mean_cosine is not None else {}),
                "source": self.source}

    @classmethod
    def from_dict(cls, modality: Modality, d: Mapping[str, Any], *, where: str = "input_ranges") -> "InputRanges":
        if not isinstance(d, Mapping) or not isinstance(d.get("ranges"), Mapping):
            raise ConfigError(where, d, "a mapping with 'ranges': {statistic: [low, high]}")
        ranges: dict[str, tuple[float, float]] = {}
        for k, v in d["ranges"].items():
            if k not in FEATURES[modality]:
                raise ConfigError(f"{where}.ranges.{k}", v, f"one of {', '.join(FEATURES[modality])}")
            try:
                lo, hi = (float(x) for x in v)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.ranges.{k}", v, "[low, high] numbers") from None
            if not lo <= hi:
                raise ConfigError(f"{where}.ranges.{k}", v, "low <= high")
            ranges[k] = (lo, hi)
        mc = d.get("embedding_mean_cosine")
        if mc is not None and not (isinstance(mc, (int, float)) and -1 <= mc <= 1):
            raise ConfigError(f"{where}.embedding_mean_cosine", mc, "a number in [-1, 1]")
        return cls(Modality(modality), ranges, None if mc is None else float(mc), str(d.get("source", "")))


def derive_ranges(modality: Modality, per_bag_medians: Sequence[Mapping[str, float]], mean_cosine: float | None,
                  source: str = "") -> InputRanges:
    """Training ranges from the per-bag medians of training bags: their min..max widened by each statistic's
    margin (:data:`FEATURES`)."""
    m = Modality(modality)
    ranges = {}
    for k, (_, rel, absm) in FEATURES[m].items():
        vals = [float(b[k]) for b in per_bag_medians if k in b and math.isfinite(float(b[k]))]
        if not vals:
            continue
        lo, hi = min(vals), max(vals)
        ranges[k] = (lo - abs(lo) * rel - absm, hi + abs(hi) * rel + absm)
    return InputRanges(m, ranges, mean_cosine, source)


@dataclass(frozen=True)
class Finding:
    statistic: str
    value: float
    low: float
    high: float

    def text(self) -> str:
        unit = ""
        for feats in FEATURES.values():
            if self.statistic in feats:
                unit = feats[self.statistic][0]
        u = f" {unit}" if unit else ""
        return f"{self.statistic} {self.value:.4g}{u} outside the training range {self.low:.4g}..{self.high:.4g}{u}"


@dataclass(frozen=True)
class ModalityVerdict:
    modality: Modality
    frames: int
    medians: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    mean_cosine: float | None = None
    training_mean_cosine: float | None = None
    unchecked: list[str] = field(default_factory=list)  # statistics without a training range or a value

    @property
    def collapsed(self) -> bool:
        return (self.mean_cosine is not None and self.training_mean_cosine is not None
                and math.isfinite(self.mean_cosine) and self.mean_cosine > self.training_mean_cosine + SPREAD_MARGIN)

    @property
    def in_domain(self) -> bool:
        return not self.findings and not self.collapsed

    def reasons(self) -> list[str]:
        out = [f.text() for f in self.findings]
        if self.collapsed:
            out.append(f"embeddings collapse: mean cosine between frames {self.mean_cosine:.2f} vs "
                       f"{self.training_mean_cosine:.2f} on the training data (limit +{SPREAD_MARGIN:g})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "medians": {k: round(v, 4) for k, v in self.medians.items()},
                "in_domain": self.in_domain, "reasons": self.reasons(),
                "mean_cosine": None if self.mean_cosine is None or not math.isfinite(self.mean_cosine)
                else round(self.mean_cosine, 4),
                "training_mean_cosine": self.training_mean_cosine, "unchecked": self.unchecked}


def medians(stats: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per statistic, the median over frames (NaNs ignored)."""
    cols: dict[str, list[float]] = {}
    for s in stats:
        for k, v in s.items():
            if math.isfinite(v):
                cols.setdefault(k, []).append(v)
    return {k: float(np.median(v)) for k, v in cols.items()}


def check_modality(modality: Modality, stats: Sequence[Mapping[str, float]], ranges: InputRanges | None,
                   mean_cosine: float | None = None) -> ModalityVerdict:
    """Compare a bag's per-frame statistics (their medians) and embedding spread with the training ranges."""
    m = Modality(modality)
    med = medians(stats)
    findings, unchecked = [], []
    for k in FEATURES[m]:
        if ranges is None or k not in ranges.ranges or k not in med:
            unchecked.append(k)
            continue
        lo, hi = ranges.ranges[k]
        if not lo <= med[k] <= hi:
            findings.append(Finding(k, med[k], lo, hi))
    return ModalityVerdict(m, len(stats), med, findings, mean_cosine,
                           ranges.mean_cosine if ranges is not None else None, unchecked)


class DomainMonitor:
    """The input check on a live stream: feed it each decoded frame; after ``frames`` frames of a modality it
    returns (once) a warning naming what is outside the training ranges, or None. No logging here: the caller
    logs."""

    def __init__(self, ranges: Mapping[Modality, InputRanges], frames: int = 10) -> None:
        self.ranges = dict(ranges)
        self.frames = int(frames)
        self._stats: dict[Modality, list[dict[str, float]]] = {m: [] for m in self.ranges}
        self.verdicts: dict[Modality, ModalityVerdict] = {}

    def observe(self, modality: Modality, data: Any, *, hfov_deg: float | None = None,
                reduction: int = 1) -> str | None:
        """One decoded frame (``reduction``: see :func:`frame_stats`). Safe with one caller per modality."""
        m = Modality(modality)
        if m not in self._stats or m in self.verdicts:
            return None
        try:
            self._stats[m].append(frame_stats(m, data, hfov_deg=hfov_deg, reduction=reduction))
        except (KeyError, ValueError, TypeError):  # a frame the statistics cannot read: not this check's business
            return None
        if len(self._stats[m]) < self.frames:
            return None
        v = check_modality(m, self._stats.pop(m), self.ranges[m])
        self.verdicts[m] = v
        if v.in_domain:
            return None
        return (f"{m.value} input looks unlike the {m.value} encoder's training data (first {v.frames} frames): "
                + "; ".join(v.reasons()) + ". Matches may be poor: run `cmr-fusion doctor BAG` on a recording")


def ranges_from_cards(encoders: Mapping[Modality, Any]) -> dict[Modality, InputRanges]:
    """The training ranges in the encoders' model cards (``card.input_ranges``); encoders without them are left out."""
    out = {}
    for m, enc in encoders.items():
        d = getattr(getattr(enc, "card", None), "input_ranges", None)
        if d:
            out[Modality(m)] = InputRanges.from_dict(Modality(m), d, where=f"{Modality(m).value} card input_ranges")
    return out


def monitor_for(encoders: Mapping[Modality, Any], frames: int = 10) -> DomainMonitor:
    """A :class:`DomainMonitor` over the ranges in the encoders' cards (the fusion node's start-up check)."""
    return DomainMonitor(ranges_from_cards(encoders), frames)
