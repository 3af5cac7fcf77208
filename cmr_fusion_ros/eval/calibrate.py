"""Fit the per-pair score calibration (:mod:`cmr_fusion_ros.core.calibration`) on validation bags and store it in the
model cards.

For each (database, queries) pair of bags of one place, every query frame's ``top_k`` best matches among the database
frames of each modality give one sample each: the cosine and whether the match lies within ``radius`` metres (a true
revisit). At run time each of the policy's ``top_k`` candidates can become an event, so the fit sees the same
candidates (``top_k`` 1: the best match only, as before 2026-12-03). Queries whose place the database lacks give
false samples, as they give false events at run time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cmr_fusion_ros.core.calibration import PairCalibration, ScoreCalibration, fit_platt
from cmr_fusion_ros.core.encoder import OnnxEncoder, card_path
from cmr_fusion_ros.core.errors import ModelError
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.evaluate import BagEmbeddings

__all__ = ["best_match_samples", "fit_calibration", "write_calibration"]


def best_match_samples(database: BagEmbeddings, queries: BagEmbeddings, radius: float, top_k: int = 1
                       ) -> dict[tuple[Modality, Modality], tuple[np.ndarray, np.ndarray]]:
    """Per (query, database) modality pair: the cosines of every query's ``top_k`` best matches (query-major, best
    first) and whether each is within ``radius`` (x, y)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    out = {}
    for qm, q in queries.embeddings.items():
        for dm, d in database.embeddings.items():
            sims = q @ d.T
            k = min(top_k, sims.shape[1])
            best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            rows = np.arange(len(q))[:, None]
            dist = np.linalg.norm(queries.positions[qm][:, None, :2] - database.positions[dm][best, :2], axis=2)
            out[(qm, dm)] = (sims[rows, best].astype(np.float64).ravel(), (dist <= radius).ravel())
    return out


def fit_calibration(places: Sequence[tuple[BagEmbeddings, BagEmbeddings]], radius: float = 10.0,
                    min_samples: int = 20, top_k: int = 1) -> tuple[ScoreCalibration, dict]:
    """Pool the samples of every place and fit each pair (pairs with fewer than ``min_samples`` or no true or no
    false sample are left out). Returns the calibration and, per pair, the pooled samples (for reports)."""
    pooled: dict[tuple[Modality, Modality], list[tuple[np.ndarray, np.ndarray]]] = {}
    for db, q in places:
        for pair, s in best_match_samples(db, q, radius, top_k).items():
            pooled.setdefault(pair, []).append(s)
    pairs, samples = {}, {}
    for pair, parts in pooled.items():
        scores = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        samples[pair] = (scores, labels)
        if len(scores) < min_samples or labels.all() or not labels.any():
            continue
        a, b = fit_platt(scores, labels.astype(np.float64))
        pairs[pair] = PairCalibration(a, b, int(len(scores)), int(labels.sum()))
    return ScoreCalibration(pairs), samples


def write_calibration(calibration: ScoreCalibration, encoders: Mapping[Modality, OnnxEncoder], source: str) -> list[str]:
    """Write each query modality's ``score_calibration`` into its card (JSON) beside the model."""
    written = []
    for m, enc in encoders.items():
        block = calibration.card_block(m, source)
        if not block:
            continue
        cp = card_path(enc.config.model_path)
        try:
            data = json.loads(Path(cp).read_text())
        except (OSError, ValueError) as err:
            raise ModelError(str(cp), f"unreadable card: {err}") from err
        data["score_calibration"] = block
        Path(cp).write_text(json.dumps(data, indent=2) + "\n")
        written.append(str(cp))
    return written
