"""Match scores as probabilities: per query -> match modality pair, P(true revisit | cosine) by logistic (Platt)
calibration, fitted on validation data and stored in the query modality's model card (``score_calibration``).

A raw cosine means different things for different pairs (camera -> LiDAR 0.5 is not radar -> camera 0.5) and rigs;
the probability is comparable, so one threshold (``policy.min_probability``) can serve every pair. Fit data: for
every query frame of a validation bag, its best match in a database bag of the same place (cosine) and whether that
match lies within the radius (a true revisit) - including queries whose place the database never saw, whose best
match is always false, as at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.types import Modality

__all__ = ["PairCalibration", "ScoreCalibration", "fit_platt"]


def fit_platt(scores: np.ndarray, labels: np.ndarray, *, l2: float = 1e-3, iterations: int = 100) -> tuple[float, float]:
    """(a, b) of ``P = 1 / (1 + exp(-(a * score + b)))`` maximising the likelihood of ``labels`` (0/1), with Platt's
    target smoothing and a small L2 penalty on ``a`` (Newton's method)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.float64)
    if s.shape != y.shape or s.ndim != 1 or len(s) < 2:
        raise ConfigError("calibration.samples", len(s), "at least 2 (score, label) pairs of equal length")
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))  # Platt (1999): never exactly 0 or 1
    x = np.stack([s, np.ones_like(s)], axis=1)
    w = np.zeros(2)
    reg = np.diag([l2, 0.0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - t) + reg @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + reg + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


@dataclass(frozen=True)
class PairCalibration:
    a: float
    b: float
    samples: int = 0
    positives: int = 0

    def __call__(self, score: float | np.ndarray) -> float | np.ndarray:
        z = self.a * np.asarray(score, np.float64) + self.b
        p = 1.0 / (1.0 + np.exp(-z))
        return float(p) if np.ndim(p) == 0 else p

    def score_for(self, probability: float) -> float:
        """The cosine at which the probability reaches ``probability`` (for a > 0)."""
        return (math.log(probability / (1 - probability)) - self.b) / self.a

    def to_dict(self) -> dict[str, Any]:
        return {"a": round(self.a, 6), "b": round(self.b, 6), "samples": self.samples, "positives": self.positives}


@dataclass(frozen=True)
class ScoreCalibration:
    """Per (query modality, match modality) pair a :class:`PairCalibration`; pairs without one give NaN."""

    pairs: dict[tuple[Modality, Modality], PairCalibration]

    def probability(self, query: Modality, match: Modality, score: float) -> float:
        c = self.pairs.get((Modality(query), Modality(match)))
        return float("nan") if c is None else float(c(score))

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def card_block(self, query: Modality, source: str = "") -> dict[str, Any]:
        """The ``score_calibration`` block of ``query``'s model card: match modality -> (a, b, samples)."""
        block: dict[str, Any] = {m.value: c.to_dict() for (q, m), c in self.pairs.items() if q is Modality(query)}
        return {**block, "source": source} if block else {}

    @classmethod
    def from_cards(cls, encoders: Mapping[Modality, Any]) -> "ScoreCalibration":
        """The calibrations in the encoders' cards (``card.score_calibration``; encoders without one add nothing).
        A value may also be the card itself (``core.encoder.ModelCard``: a memory node loads no encoder)."""
        pairs: dict[tuple[Modality, Modality], PairCalibration] = {}
        for q, enc in encoders.items():
            block = getattr(getattr(enc, "card", enc), "score_calibration", None) or {}
            for m, d in block.items():
                if m == "source":
                    continue
                key = f"{Modality(q).value} card score_calibration.{m}"
                try:
                    pairs[(Modality(q), Modality(m))] = PairCalibration(float(d["a"]), float(d["b"]),
                                                                        int(d.get("samples", 0)),
                                                                        int(d.get("positives", 0)))
                except (KeyError, TypeError, ValueError):
                    raise ConfigError(key, d, "{a: number, b: number, samples: int} with a match modality key") from None
        return cls(pairs)
