"""Place-recognition recall: recall@k and recall@1% for one query set against one database.

Definition (as in PointNetVLAD / LIP-Loc): a query counts only if at least one database entry lies within
``radius`` metres of it (ground truth); its retrieval at k succeeds if any of its k most similar database entries
(cosine similarity of L2-normalised embeddings) lies within ``radius``. recall@k = successes / counted queries.
recall@1% uses k = max(1, round(len(database) / 100)).

With ``query_views`` (more embeddings per query: a LiDAR scan seen at other headings) a query's similarity to a
database entry is the best over its embeddings, those of the views lowered by ``view_penalty``; the runtime searches
LiDAR entries the same way (``encoders.lidar_views``, ``policy.turned_view_penalty``).

Optionally (``max_yaw_deg``) a database entry is a positive only if it is also within that many degrees of the
query's heading: with distance alone, a place crossed at right angles counts as "the same place" though a forward
camera sees another street there.

With headings (``query_yaw``, ``db_yaw``) the result also splits the counted queries by their heading gap: the
smallest angle between the query's heading and a positive's (``HEADING_GAP_BINS``), with recall@1 per bin. A forward
sensor can hardly find a place whose positives all face 60-90 degrees away; the bins show how much of a recall such
queries hold back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError

__all__ = ["HEADING_GAP_BINS", "RecallResult", "one_percent_k", "recall_at_k"]

# heading-gap bins in degrees: [0, 30], (30, 60], (60, 90], (90, 180]
HEADING_GAP_EDGES = (30.0, 60.0, 90.0)
HEADING_GAP_BINS = ("0-30", "30-60", "60-90", "90-180")


@dataclass(frozen=True, slots=True)
class RecallResult:
    """Recall per k (``recalls[k]``), recall@1% and the counts behind them."""

    recalls: dict[int, float]
    recall_one_percent: float
    one_percent_k: int
    num_queries: int
    num_counted: int
    num_database: int
    radius_m: float
    max_yaw_deg: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    query_views: int = 1  # embeddings per query (1 + extra views)
    view_penalty: float = 0.0
    # heading-gap bin -> (counted queries, hits at 1); empty without headings
    by_heading_gap: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: a recall without counted queries is None (null; NaN is not JSON)."""
        d: dict[str, Any] = {f"recall@{k}": _or_none(v) for k, v in sorted(self.recalls.items())}
        d["recall@1%"] = _or_none(self.recall_one_percent)
        d["one_percent_k"] = self.one_percent_k
        d["num_queries"] = self.num_queries
        d["num_counted"] = self.num_counted
        d["num_database"] = self.num_database
        d["radius_m"] = self.radius_m
        if self.max_yaw_deg is not None:
            d["max_yaw_deg"] = self.max_yaw_deg
        if self.query_views > 1:
            d["query_views"] = self.query_views
            d["view_penalty"] = self.view_penalty
        if self.by_heading_gap:
            d["by_heading_gap_deg"] = {b: {"num_counted": n, "recall@1": h / n if n else None}
                                       for b, (n, h) in self.by_heading_gap.items()}
        return d


def _or_none(v: float) -> float | None:
    return None if math.isnan(v) else v


def one_percent_k(num_database: int) -> int:
    return max(1, int(round(num_database / 100.0)))


def _check(name: str, arr: np.ndarray, ndim: int) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != ndim:
        raise ConfigError(name, a.shape, f"an array with {ndim} dimensions")
    return a


def recall_at_k(
    query_emb: np.ndarray,
    db_emb: np.ndarray,
    query_pos: np.ndarray,
    db_pos: np.ndarray,
    radius: float,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk: int = 1024,
    *,
    query_yaw: np.ndarray | None = None,
    db_yaw: np.ndarray | None = None,
    max_yaw_deg: float | None = None,
    query_views: np.ndarray | None = None,
    view_penalty: float = 0.0,
) -> RecallResult:
    """Recall of ``query_emb`` (Nq, D) against ``db_emb`` (Nd, D); positions (N, 2 or 3) in metres; with
    ``max_yaw_deg``, headings ``query_yaw`` (Nq,) and ``db_yaw`` (Nd,) in radians are needed too; ``query_views``
    (Nq, V, D): more embeddings of each query, the similarity to an entry being the best of the query's own and its
    views' minus ``view_penalty``.

    Ties in similarity are broken by database index (lower first), so results are deterministic. Headings also give
    ``by_heading_gap`` (see the module text).
    """
    q = _check("query_emb", query_emb, 2).astype(np.float32)
    d = _check("db_emb", db_emb, 2).astype(np.float32)
    qp = _check("query_pos", query_pos, 2).astype(np.float64)
    dp = _check("db_pos", db_pos, 2).astype(np.float64)
    if q.shape[1] != d.shape[1]:
        raise ConfigError("db_emb", d.shape, f"the same embedding size as the queries ({q.shape[1]})")
    if qp.shape[0] != q.shape[0] or dp.shape[0] != d.shape[0] or qp.shape[1] != dp.shape[1]:
        raise ConfigError("positions", (qp.shape, dp.shape), "one position per embedding, same dimensions")
    if not (np.isfinite(radius) and radius > 0):
        raise ConfigError("radius", radius, "a finite number > 0")
    if not ks or any((not isinstance(k, (int, np.integer))) or k < 1 for k in ks):
        raise ConfigError("ks", ks, "positive integers")
    views = None
    if query_views is not None:
        views = _check("query_views", query_views, 3).astype(np.float32)
        if views.shape[0] != q.shape[0] or views.shape[2] != q.shape[1]:
            raise ConfigError("query_views", views.shape, f"(queries {q.shape[0]}, views, {q.shape[1]})")
    if not (np.isfinite(view_penalty) and view_penalty >= 0):
        raise ConfigError("view_penalty", view_penalty, "a number >= 0")
    if max_yaw_deg is not None:
        if not (np.isfinite(max_yaw_deg) and 0 < max_yaw_deg <= 180):
            raise ConfigError("max_yaw_deg", max_yaw_deg, "a number in (0, 180]")
        if query_yaw is None or db_yaw is None:
            raise ConfigError("yaw", None, "query_yaw and db_yaw when max_yaw_deg is given")
        cos_max = math.cos(math.radians(max_yaw_deg))
    headings = query_yaw is not None and db_yaw is not None
    if headings:
        qy = _check("query_yaw", query_yaw, 1).astype(np.float64)
        dy = _check("db_yaw", db_yaw, 1).astype(np.float64)
        if qy.shape[0] != q.shape[0] or dy.shape[0] != d.shape[0]:
            raise ConfigError("yaw", (qy.shape, dy.shape), "one heading per embedding")
    gap_counted = np.zeros(len(HEADING_GAP_BINS), np.int64)
    gap_hits = np.zeros(len(HEADING_GAP_BINS), np.int64)
    nd = d.shape[0]
    k1 = one_percent_k(nd)
    kmax = min(max(max(ks), k1), nd) if nd else 0
    hits = {k: 0 for k in ks}
    hit1p = 0
    counted = 0
    r2 = radius * radius
    for start in range(0, q.shape[0], chunk):
        qs, qps = q[start : start + chunk], qp[start : start + chunk]
        dist2 = ((qps[:, None, :] - dp[None, :, :]) ** 2).sum(-1)
        positive = dist2 <= r2
        if max_yaw_deg is not None:  # angle between headings <= max: cos(difference) >= cos(max)
            positive &= np.cos(qy[start : start + chunk, None] - dy[None, :]) >= cos_max - 1e-12
        has_pos = positive.any(axis=1)
        if nd == 0 or not has_pos.any():
            continue
        sim = qs[has_pos] @ d.T
        if views is not None and views.shape[1]:
            turned = np.einsum("qvd,nd->qvn", views[start : start + chunk][has_pos], d).max(axis=1)
            sim = np.maximum(sim, turned - np.float32(view_penalty))
        pos = positive[has_pos]
        # stable descending order: sort by (-sim, index)
        order = np.argsort(-sim, axis=1, kind="stable")[:, :kmax]
        ranked_pos = np.take_along_axis(pos, order, axis=1)
        first_hit = np.where(ranked_pos.any(axis=1), ranked_pos.argmax(axis=1), kmax)
        counted += int(has_pos.sum())
        for k in ks:
            hits[k] += int((first_hit < k).sum())
        if headings:  # smallest angle to a positive's heading, in degrees
            diff = np.abs(np.angle(np.exp(1j * (qy[start : start + chunk][has_pos, None] - dy[None, :]))))
            gap = np.degrees(np.where(pos, diff, np.inf).min(axis=1))
            b = np.digitize(gap, HEADING_GAP_EDGES, right=True)
            gap_counted += np.bincount(b, minlength=len(HEADING_GAP_BINS))
            gap_hits += np.bincount(b, weights=first_hit < 1, minlength=len(HEADING_GAP_BINS)).astype(np.int64)
        hit1p += int((first_hit < k1).sum())
    denom = counted if counted else 1
    return RecallResult(
        recalls={k: hits[k] / denom if counted else float("nan") for k in ks},
        recall_one_percent=hit1p / denom if counted else float("nan"),
        one_percent_k=k1,
        num_queries=int(q.shape[0]),
        num_counted=counted,
        num_database=nd,
        radius_m=float(radius),
        max_yaw_deg=None if max_yaw_deg is None else float(max_yaw_deg),
        query_views=1 + (views.shape[1] if views is not None else 0),
        view_penalty=float(view_penalty),
        by_heading_gap={b: (int(n), int(h)) for b, n, h in zip(HEADING_GAP_BINS, gap_counted, gap_hits)}
        if headings else {},
    )
