"""recall@k / recall@1% against a slow reference on hand-made and random cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.eval.recall import one_percent_k, recall_at_k


def _angle_deg(a: float, b: float) -> float:
    diff = math.degrees(abs(a - b)) % 360.0
    return min(diff, 360.0 - diff)


def slow_recall(q, d, qp, dp, radius, ks, qy=None, dy=None, max_yaw=None):
    """Reference: loops, explicit sort with ties by index; optional heading condition in degrees."""
    results = {k: [] for k in ks}
    k1 = max(1, int(round(len(d) / 100.0)))
    one = []
    for i in range(len(q)):
        pos = {j for j in range(len(d)) if math.dist(qp[i], dp[j]) <= radius
               and (max_yaw is None or _angle_deg(qy[i], dy[j]) <= max_yaw)}
        if not pos:
            continue
        sims = [(-float(np.dot(q[i], d[j])), j) for j in range(len(d))]
        ranked = [j for _, j in sorted(sims)]
        for k in ks:
            results[k].append(any(j in pos for j in ranked[:k]))
        one.append(any(j in pos for j in ranked[:k1]))
    return {k: (sum(v) / len(v) if v else float("nan")) for k, v in results.items()}, (sum(one) / len(one) if one else float("nan")), len(one)


def test_hand_made_case() -> None:
    # database: 4 places on a line 0, 10, 20, 30 m; embeddings are unit axes
    d = np.eye(4, dtype=np.float32)
    dp = np.array([[0, 0], [10, 0], [20, 0], [30, 0]], float)
    # radius 5 m. query 0 at 1 m: best match db 0 (right)
    # query 1 at 21 m: db 3 first (wrong), then db 0, db 1, db 2 tied at 0 in index order: its positive db 2 is 4th
    # query 2 at 29 m: best db 0 (wrong), second db 3 (right)
    # query 3 at 100 m: no positive, not counted
    q = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0.9, 0, 0, 0.5], [1, 0, 0, 0]], np.float32)
    qp = np.array([[1, 0], [21, 0], [29, 0], [100, 0]], float)
    r = recall_at_k(q, d, qp, dp, radius=5.0, ks=(1, 2, 3))
    assert r.num_counted == 3 and r.num_queries == 4 and r.num_database == 4
    assert r.recalls[1] == pytest.approx(1 / 3)
    assert r.recalls[2] == pytest.approx(2 / 3)
    assert r.recalls[3] == pytest.approx(2 / 3)
    assert r.one_percent_k == 1 and r.recall_one_percent == pytest.approx(1 / 3)


def test_ties_break_by_lower_index() -> None:
    d = np.array([[1, 0], [1, 0]], np.float32)
    dp = np.array([[100, 0], [0, 0]], float)
    r = recall_at_k(np.array([[1, 0]], np.float32), d, np.zeros((1, 2)), dp, radius=1.0, ks=(1, 2))
    assert r.recalls[1] == 0.0 and r.recalls[2] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_slow_reference_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nd, nq, dim = 230, 57, 8
    dp = rng.uniform(0, 200, (nd, 2))
    qp = rng.uniform(0, 220, (nq, 2))
    d = rng.standard_normal((nd, dim)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ks = (1, 5, 10)
    fast = recall_at_k(q, d, qp, dp, radius=15.0, ks=ks, chunk=13)
    ref, ref1p, counted = slow_recall(q, d, qp, dp, 15.0, ks)
    assert fast.num_counted == counted > 0
    for k in ks:
        assert fast.recalls[k] == pytest.approx(ref[k])
    assert fast.one_percent_k == 2
    assert fast.recall_one_percent == pytest.approx(ref1p)


def test_perfect_embeddings_give_full_recall() -> None:
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 500, (100, 2))
    emb = rng.standard_normal((100, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = recall_at_k(emb, emb, pos + 1.0, pos, radius=5.0)
    assert r.recalls[1] == 1.0 and r.recall_one_percent == 1.0


def test_no_positive_gives_nan_and_bad_input_raises() -> None:
    r = recall_at_k(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 2)), np.full((2, 2), 100.0), radius=1.0)
    assert r.num_counted == 0 and math.isnan(r.recalls[1])
    assert r.to_dict()["recall@1"] is None and r.to_dict()["recall@1%"] is None  # null in JSON files
    with pytest.raises(ConfigError, match="radius"):
        recall_at_k(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)), radius=0)
    with pytest.raises(ConfigError, match="db_emb"):
        recall_at_k(np.ones((2, 3)), np.ones((2, 4)), np.zeros((2, 2)), np.zeros((2, 2)), radius=1)


def test_one_percent_k() -> None:
    assert [one_percent_k(n) for n in (1, 49, 150, 1000)] == [1, 1, 2, 10]


def test_heading_condition_hand_made() -> None:
    """Two database frames at the query's place: one facing the other way (pi), one at right angles (pi/2). With
    distance alone the nearest in embedding space counts; with max_yaw_deg only a frame facing the same way does."""
    d = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    dp = np.array([[0, 0], [1, 0], [2, 0]], float)
    dy = np.array([math.pi, math.pi / 2, 0.1])
    q = np.array([[1, 0.5, 0.2]], np.float32)  # ranks db 0, 1, 2
    qp, qy = np.zeros((1, 2)), np.array([-0.05])
    assert recall_at_k(q, d, qp, dp, 5.0, ks=(1, 2, 3)).recalls[1] == 1.0
    r = recall_at_k(q, d, qp, dp, 5.0, ks=(1, 2, 3), query_yaw=qy, db_yaw=dy, max_yaw_deg=30)
    assert r.recalls == {1: 0.0, 2: 0.0, 3: 1.0} and r.max_yaw_deg == 30.0 and r.to_dict()["max_yaw_deg"] == 30.0
    r = recall_at_k(q, d, qp, dp, 5.0, ks=(1, 2, 3), query_yaw=qy, db_yaw=dy, max_yaw_deg=100)  # 90 deg counts
    assert r.recalls == {1: 0.0, 2: 1.0, 3: 1.0}
    # headings wrap: -179 deg and +179 deg are 2 deg apart
    r = recall_at_k(q[:, :1], np.ones((1, 1), np.float32), qp, dp[:1], 5.0, ks=(1,),
                    query_yaw=np.radians([-179.0]), db_yaw=np.radians([179.0]), max_yaw_deg=5)
    assert r.recalls[1] == 1.0
    assert "max_yaw_deg" not in recall_at_k(q, d, qp, dp, 5.0, ks=(1,)).to_dict()


def _random_headed(seed: int, nd: int, nq: int, dim: int, extent: float) -> tuple[np.ndarray, ...]:
    """Random queries and database entries with positions in an ``extent`` square and headings: q, d, qp, dp, qy, dy."""
    rng = np.random.default_rng(seed)
    dp, qp = rng.uniform(0, extent, (nd, 2)), rng.uniform(0, extent, (nq, 2))
    dy, qy = rng.uniform(-math.pi, math.pi, nd), rng.uniform(-math.pi, math.pi, nq)
    d = rng.standard_normal((nd, dim)).astype(np.float32)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    return q, d, qp, dp, qy, dy


@pytest.mark.parametrize("seed", [3, 4])
def test_heading_condition_matches_slow_reference(seed: int) -> None:
    q, d, qp, dp, qy, dy = _random_headed(seed, 180, 41, 6, 120.0)
    ks = (1, 5, 10)
    fast = recall_at_k(q, d, qp, dp, 12.0, ks, chunk=7, query_yaw=qy, db_yaw=dy, max_yaw_deg=40)
    ref, ref1p, counted = slow_recall(q, d, qp, dp, 12.0, ks, qy, dy, 40)
    plain = recall_at_k(q, d, qp, dp, 12.0, ks)
    assert 0 < fast.num_counted == counted < plain.num_counted
    for k in ks:
        assert fast.recalls[k] == pytest.approx(ref[k])
    assert fast.recall_one_percent == pytest.approx(ref1p)


def test_heading_gap_hand_made() -> None:
    """Queries split by the smallest angle between their heading and a positive's; R@1 per bin."""
    d = np.eye(4, dtype=np.float32)
    dp = np.array([[0, 0], [1, 0], [50, 0], [51, 0]], float)
    dy = np.radians([90.0, 175.0, 0.0, 0.0])
    # q0 at 0 m heading 80 deg: positives db 0 (10 deg off) and db 1 (95 deg): gap 10, found (db 0 first)
    # q1 at 0 m heading -100 deg: positives db 0 (190 deg, wrapped 170) and db 1 (275, wrapped 85): gap 85, found
    # q2 at 50 m heading 45 deg: positives db 2, db 3 (both 45 off): gap 45, misses (db 0 ranks first)
    # q3 at 50 m heading -179 deg: positives at 0 deg: gap 179, found; q4 at 200 m: no positive
    q = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0.5, 0], [0, 0, 0, 1], [1, 0, 0, 0]], np.float32)
    qp = np.array([[0, 0], [0, 0], [50, 0], [50, 0], [200, 0]], float)
    qy = np.radians([80.0, -100.0, 45.0, -179.0, 0.0])
    r = recall_at_k(q, d, qp, dp, 5.0, ks=(1,), query_yaw=qy, db_yaw=dy)
    assert r.num_counted == 4 and r.recalls[1] == 0.75 and r.max_yaw_deg is None  # headings alone filter nothing
    assert r.by_heading_gap == {"0-30": (1, 1), "30-60": (1, 0), "60-90": (1, 1), "90-180": (1, 1)}
    gaps = r.to_dict()["by_heading_gap_deg"]
    assert gaps["30-60"] == {"num_counted": 1, "recall@1": 0.0} and gaps["0-30"]["recall@1"] == 1.0
    # with the heading condition only positives within it count, so the gaps stay within it too
    r = recall_at_k(q, d, qp, dp, 5.0, ks=(1,), query_yaw=qy, db_yaw=dy, max_yaw_deg=60)
    assert r.by_heading_gap == {"0-30": (1, 1), "30-60": (1, 0), "60-90": (0, 0), "90-180": (0, 0)}
    assert r.to_dict()["by_heading_gap_deg"]["60-90"] == {"num_counted": 0, "recall@1": None}
    # without headings there is no split
    assert recall_at_k(q, d, qp, dp, 5.0, ks=(1,)).by_heading_gap == {}
    assert "by_heading_gap_deg" not in recall_at_k(q, d, qp, dp, 5.0, ks=(1,)).to_dict()


@pytest.mark.parametrize("seed", [5, 6])
def test_heading_gap_matches_slow_reference(seed: int) -> None:
    nd, nq = 150, 60
    q, d, qp, dp, qy, dy = _random_headed(seed, nd, nq, 5, 100.0)
    fast = recall_at_k(q, d, qp, dp, 15.0, (1, 3), chunk=9, query_yaw=qy, db_yaw=dy)
    ref = {b: [0, 0] for b in ("0-30", "30-60", "60-90", "90-180")}
    for i in range(nq):
        pos = [j for j in range(nd) if math.dist(qp[i], dp[j]) <= 15.0]
        if not pos:
            continue
        gap = min(_angle_deg(qy[i], dy[j]) for j in pos)
        b = "0-30" if gap <= 30 else "30-60" if gap <= 60 else "60-90" if gap <= 90 else "90-180"
        top = min(range(nd), key=lambda j: (-float(np.dot(q[i], d[j])), j))
        ref[b][0] += 1
        ref[b][1] += top in pos
    assert fast.by_heading_gap == {b: tuple(v) for b, v in ref.items()}
    assert sum(n for n, _ in fast.by_heading_gap.values()) == fast.num_counted
    assert sum(h for _, h in fast.by_heading_gap.values()) == round(fast.recalls[1] * fast.num_counted)


def test_heading_condition_bad_input() -> None:
    q, d, p = np.ones((1, 2), np.float32), np.ones((1, 2), np.float32), np.zeros((1, 2))
    with pytest.raises(ConfigError, match="max_yaw_deg"):
        recall_at_k(q, d, p, p, 1.0, query_yaw=np.zeros(1), db_yaw=np.zeros(1), max_yaw_deg=0)
    with pytest.raises(ConfigError, match="query_yaw and db_yaw"):
        recall_at_k(q, d, p, p, 1.0, max_yaw_deg=30)
    with pytest.raises(ConfigError, match="one heading per embedding"):
        recall_at_k(q, d, p, p, 1.0, query_yaw=np.zeros(2), db_yaw=np.zeros(1), max_yaw_deg=30)


def test_query_views_take_the_best_view_per_entry() -> None:
    # db 0 at the query's place (positive), db 1 far away; the query's first embedding prefers db 1, its second view
    # is db 0 itself: with views the query succeeds at rank 1
    d = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    dp = np.array([[0, 0], [100, 0]], float)
    q = np.array([[0.6, 0.8, 0]], np.float32)
    views = np.array([[[0, 0, 1], [1, 0, 0]]], np.float32)
    plain = recall_at_k(q, d, np.zeros((1, 2)), dp, radius=5.0, ks=(1, 2))
    turned = recall_at_k(q, d, np.zeros((1, 2)), dp, radius=5.0, ks=(1, 2), query_views=views)
    assert plain.recalls[1] == 0.0 and turned.recalls[1] == 1.0
    assert plain.query_views == 1 and turned.query_views == 3 and turned.to_dict()["query_views"] == 3
    assert "query_views" not in plain.to_dict()
    # a penalty of 0.5 on the views: db 0 found by the view counts 0.5, its own 0.6 stays below the far db 1 (0.8)
    pen = recall_at_k(q, d, np.zeros((1, 2)), dp, radius=5.0, ks=(1, 2), query_views=views, view_penalty=0.5)
    assert pen.recalls[1] == 0.0 and pen.to_dict()["view_penalty"] == 0.5
    # zero extra views = as without
    none = recall_at_k(q, d, np.zeros((1, 2)), dp, radius=5.0, ks=(1, 2), query_views=np.zeros((1, 0, 3), np.float32))
    assert none.recalls == plain.recalls


@pytest.mark.parametrize("seed", [0, 1])
def test_query_views_match_slow_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nd, nq, nv, dim = 120, 41, 3, 6
    dp, qp = rng.uniform(0, 150, (nd, 2)), rng.uniform(0, 160, (nq, 2))
    d = rng.standard_normal((nd, dim)).astype(np.float32)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    views = rng.standard_normal((nq, nv, dim)).astype(np.float32)
    fast = recall_at_k(q, d, qp, dp, radius=15.0, ks=(1, 3, 5), chunk=7, query_views=views, view_penalty=0.1)
    # reference: per entry the best of the query's own similarity and its views' minus the penalty
    best = np.maximum(q @ d.T, np.max(views @ d.T, axis=1) - np.float32(0.1))  # (nq, nd)
    ranked = [sorted(range(nd), key=lambda j: (-best[i, j], j)) for i in range(nq)]
    counted, hits = 0, {1: 0, 3: 0, 5: 0}
    for i in range(nq):
        pos = {j for j in range(nd) if math.dist(qp[i], dp[j]) <= 15.0}
        if not pos:
            continue
        counted += 1
        for k in hits:
            hits[k] += any(j in pos for j in ranked[i][:k])
    assert fast.num_counted == counted > 0
    for k in hits:
        assert fast.recalls[k] == pytest.approx(hits[k] / counted)


def test_query_views_bad_shape() -> None:
    with pytest.raises(ConfigError, match="query_views"):
        recall_at_k(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)), radius=1,
                    query_views=np.ones((2, 3)))
    with pytest.raises(ConfigError, match="query_views"):
        recall_at_k(np.ones((2, 3)), np.ones((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)), radius=1,
                    query_views=np.ones((1, 2, 3)))
