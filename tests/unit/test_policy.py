"""MatchPolicy on scripted sequences: routes, thresholds, temporal exclusion, debounce, sequence consistency."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory import MemoryConfig, MemoryEntry, Neighbor, SceneMemory
from cmr_fusion_ros.core.policy import MatchPolicy, MatchResult, PolicyConfig, Query, merge_neighbors
from cmr_fusion_ros.core.types import Modality, Pose

S = 1_000_000_000
CAM, LID, RAD = Modality.CAMERA, Modality.LIDAR, Modality.RADAR
V = np.ones(4, np.float32) / 2


def entry(i: int, mod=LID, stamp_s: float = 0.0, pose: Pose | None = None, session: str = "old",
          robot: str = "") -> MemoryEntry:
    return MemoryEntry(i, mod, f"/{mod.value}", f"{mod.value}_link", int(stamp_s * S), pose, session, V, robot)


def nb(e: MemoryEntry, score: float, rank: int) -> Neighbor:
    return Neighbor(e, score, rank)


def query(t_s: float, pose: Pose | None = None, mod=CAM, session: str = "now", qid: int = 0) -> Query:
    return Query(mod, f"/{mod.value}", int(t_s * S), f"{mod.value}_optical", V, pose, session, qid)


def policy(**over) -> MatchPolicy:
    base = {"min_score": 0.5, "exclude_recent_s": 30.0, "debounce_s": 10.0, "place_radius_m": 5.0,
            "place_window_s": 5.0}
    base.update(over)
    return MatchPolicy(PolicyConfig.from_dict(base))


# --- config -------------------------------------------------------------------------------------------------------


def test_config_defaults_and_routes():
    c = PolicyConfig.from_dict({})
    assert c.targets(CAM) == (LID, RAD) and c.targets(LID) == (CAM, RAD) and c.targets(RAD) == (CAM, LID)
    c = PolicyConfig.from_dict({"routes": {"camera": ["lidar"], "radar": ["Camera", "lidar", "camera"]}})
    assert c.targets(CAM) == (LID,) and c.targets(RAD) == (CAM, LID) and c.targets(LID) == ()


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({"routes": {"sonar": ["lidar"]}}, "policy.routes.sonar"),
        ({"routes": {"camera": "lidar"}}, "policy.routes.camera"),
        ({"routes": {"camera": ["lidar", "thermal"]}}, "policy.routes.camera"),
        ({"routes": ["camera"]}, "policy.routes"),
        ({"top_k": 0}, "policy.top_k"),
        ({"min_score": 1.5}, "policy.min_score"),
        ({"exclude_recent_s": -1}, "policy.exclude_recent_s"),
        ({"sequence_length": 0}, "policy.sequence_length"),
        ({"debounce": 3}, "policy.debounce"),
    ],
)
def test_config_errors_name_the_key(d, key):
    with pytest.raises(ConfigError) as info:
        PolicyConfig.from_dict(d)
    assert info.value.key == key


# --- request and filtering ----------------------------------------------------------------------------------------


def test_request_follows_routes_and_exclusions():
    p = policy(top_k=7, exclude_same_session=True, routes={"camera": ["lidar", "radar"], "lidar": []})
    req = p.request(query(100.0, session="drive2"))
    assert req.modalities == (LID, RAD) and req.k == 7 and req.min_score == 0.5
    assert req.exclude_newer_than_ns == 70 * S and req.exclude_session == "drive2"
    assert p.request(query(100.0, mod=LID)) is None
    assert p.request(query(100.0, mod=RAD)) is None


def test_decide_ignores_candidates_that_break_the_rules():
    p = policy(exclude_same_session=True, routes={"camera": ["lidar"]})
    q = query(100.0, session="now")
    cands = [
        nb(entry(1, RAD, 10.0), 0.9, 0),  # not routed
        nb(entry(2, LID, 10.0), 0.4, 1),  # below threshold
        nb(entry(3, LID, 80.0), 0.9, 2),  # too recent (newer than 100 - 30 s)
        nb(entry(4, LID, 10.0, session="now"), 0.9, 3),  # same session
        nb(entry(5, LID, 70.0), 0.6, 4),  # exactly at the exclusion edge: allowed
    ]
    out = p.decide(q, cands)
    assert [r.match_id for r in out] == [5] and out[0].rank == 4


def test_the_query_never_matches_its_own_entry():
    p = policy(exclude_recent_s=0.0, routes={"camera": ["camera"]})
    own = entry(7, CAM, 100.0)
    assert p.decide(query(100.0, qid=7), [nb(own, 1.0, 0)]) == []
    assert [r.match_id for r in p.decide(query(100.0, qid=8), [nb(own, 1.0, 0)])] == [7]


def test_match_result_fills_every_event_field():
    p = policy()
    q = dataclasses.replace(query(100.0, Pose(3, 4, 0), qid=42), pose_frame_id="odom")
    [r] = p.decide(q, [nb(entry(9, LID, 5.0, Pose(0, 0, 0)), 0.8, 0)])
    assert r == MatchResult(
        query_modality=CAM, query_topic="/camera", query_id=42, query_stamp_ns=100 * S,
        query_frame_id="camera_optical", match_modality=LID, match_topic="/lidar", match_id=9,
        match_stamp_ns=5 * S, match_frame_id="lidar_link", score=0.8, rank=0, query_pose=Pose(3, 4, 0),
        match_pose=Pose(0, 0, 0), distance=5.0, match_robot="", pose_frame_id="odom", match_session="old",
    )
    [r] = policy().decide(query(100.0, None), [nb(entry(9, LID, 5.0, Pose(0, 0, 0)), 0.8, 0)])
    assert math.isnan(r.distance) and r.query_pose is None and r.query_id == 0


@pytest.mark.parametrize("rule, expected", [("all", [1, 2]), ("others", [2]), ("own", [1])])
def test_match_robots_limits_whose_entries_match(rule, expected):
    p = policy(match_robots=rule)
    q = dataclasses.replace(query(100.0), robot="car1")
    req = p.request(q)
    assert req.kwargs().get("robot") == ("car1" if rule == "own" else None)
    assert req.kwargs().get("exclude_robot") == ("car1" if rule == "others" else None)
    found = [nb(entry(1, robot="car1"), 0.9, 0), nb(entry(2, stamp_s=50.0, pose=Pose(100, 0, 0), robot="car2"),
                                                   0.8, 1)]
    events = p.decide(q, found)
    assert [r.match_id for r in events] == expected
    assert {r.match_robot for r in events} == {"car1" if i == 1 else "car2" for i in expected}


def test_match_robots_refuses_an_unknown_rule():
    with pytest.raises(ConfigError, match="policy.match_robots"):
        PolicyConfig.from_dict({"match_robots": "nobody"})


# --- debounce -----------------------------------------------------------------------------------------------------


def drive_past(p: MatchPolicy, t0: float, seconds: float, place_x: float, first_id: int, hz: float = 10.0):
    """A robot drives past a remembered place: each frame matches the memory entry recorded at about the same spot
    (the matched place moves along with the robot, 1 m/s). Returns the events."""
    events = []
    for j in range(int(seconds * hz)):
        t = t0 + j / hz
        x = place_x + j / hz
        cand = [nb(entry(first_id + j, LID, 1.0 + j / hz, Pose(x, 0, 0)), 0.9, 0),
                nb(entry(first_id + 1000 + j, LID, 1.1 + j / hz, Pose(x + 0.5, 0, 0)), 0.8, 1)]
        events += p.decide(query(t, Pose(x, 0.3, 0)), cand)
    return events


def test_one_event_per_revisit_not_per_frame():
    p = policy(debounce_s=10.0)
    ev = drive_past(p, 100.0, 3.0, 0.0, 1)  # 30 frames, 60 candidates
    assert len(ev) == 1 and ev[0].match_id == 1 and ev[0].rank == 0
    assert p.suppressed == 59
    # away from anything for 20 s (> debounce_s): queries with no candidates
    for j in range(20):
        assert p.decide(query(103.0 + j, Pose(100 + j, 0, 0)), []) == []
    ev = drive_past(p, 123.0, 3.0, 0.0, 5000)  # the same place again, later: a new revisit
    assert len(ev) == 1 and ev[0].match_id == 5000


def test_a_different_place_fires_during_a_revisit():
    p = policy()
    assert len(p.decide(query(100.0), [nb(entry(1, LID, 1.0, Pose(0, 0, 0)), 0.9, 0)])) == 1
    # same place within radius: suppressed; a place 50 m away: fires; both in the same query
    out = p.decide(query(100.1), [nb(entry(2, LID, 1.1, Pose(1, 0, 0)), 0.9, 0),
                                  nb(entry(3, LID, 40.0, Pose(50, 0, 0)), 0.8, 1)])
    assert [r.match_id for r in out] == [3]
    # another modality at the same place is a separate revisit
    out = p.decide(query(100.2), [nb(entry(4, RAD, 1.0, Pose(0, 0, 0)), 0.9, 0)])
    assert [r.match_id for r in out] == [4]
    # two candidates of one new place in one query: one event, the best one
    out = p.decide(query(100.3), [nb(entry(5, LID, 60.0, Pose(200, 0, 0)), 0.9, 0),
                                  nb(entry(6, LID, 60.5, Pose(201, 0, 0)), 0.85, 1)])
    assert [r.match_id for r in out] == [5]


def test_debounce_without_poses_uses_matched_stamps():
    p = policy(place_window_s=5.0)
    assert len(p.decide(query(100.0), [nb(entry(1, LID, 10.0), 0.9, 0)])) == 1
    assert p.decide(query(100.1), [nb(entry(2, LID, 12.0), 0.9, 0)]) == []  # within 5 s of the anchor
    assert p.decide(query(100.2), [nb(entry(3, LID, 16.0), 0.9, 0)]) == []  # anchor moved to 12 s: still same
    assert len(p.decide(query(100.3), [nb(entry(4, LID, 40.0), 0.9, 0)])) == 1  # another place


def test_revisit_ends_when_the_query_moved_away():
    p = policy(rearm_distance_m=5.0, debounce_s=100.0)
    c = [nb(entry(1, LID, 1.0, Pose(0, 0, 0)), 0.9, 0)]
    assert len(p.decide(query(100.0, Pose(0, 0, 0)), c)) == 1
    assert p.decide(query(101.0, Pose(4, 0, 0)), c) == []
    assert len(p.decide(query(102.0, Pose(6, 0, 0)), c)) == 1  # moved 6 m > 5 m since firing: may fire again
    p.reset()
    assert len(p.decide(query(102.1, Pose(6, 0, 0)), c)) == 1


def test_zero_debounce_fires_every_frame_but_not_twice_per_query():
    p = policy(debounce_s=0.0)
    ev = drive_past(p, 100.0, 1.0, 0.0, 1)
    assert len(ev) == 10


# --- sequence consistency -----------------------------------------------------------------------------------------


def test_sequence_of_n_consistent_matches_before_firing():
    p = policy(sequence_length=3, sequence_max_jump_m=3.0, routes={"camera": ["lidar"]})

    def step(t, x, i, score=0.9):
        return p.decide(query(t, Pose(x, 0, 0)), [nb(entry(i, LID, 1.0 + t / 100, Pose(x, 0, 0)), score, 0)])

    assert step(100.0, 0.0, 1) == []
    assert step(100.1, 1.0, 2) == []
    out = step(100.2, 2.0, 3)
    assert [r.match_id for r in out] == [3]  # third consistent match fires
    assert step(100.3, 3.0, 4) == []  # debounced: same revisit

    q = PolicyConfig.from_dict({"sequence_length": 3, "sequence_max_jump_m": 3.0, "routes": {"camera": ["lidar"]}})
    p = MatchPolicy(q)
    assert step(100.0, 0.0, 1) == [] and step(100.1, 1.0, 2) == []
    assert step(100.2, 50.0, 3) == []  # a jump: the chain restarts at 1
    assert step(100.3, 51.0, 4) == []
    assert p.decide(query(100.4), []) == []  # a query without a candidate breaks the chain
    assert step(100.5, 52.0, 5) == [] and step(100.6, 53.0, 6) == []
    assert [r.match_id for r in step(100.7, 54.0, 7)] == [7]


def test_sequence_without_poses_uses_matched_stamp_gaps():
    p = policy(sequence_length=2, sequence_max_gap_s=2.0, routes={"camera": ["lidar"]})
    assert p.decide(query(100.0), [nb(entry(1, LID, 10.0), 0.9, 0)]) == []
    assert p.decide(query(100.1), [nb(entry(2, LID, 30.0), 0.9, 0)]) == []  # 20 s apart: inconsistent
    assert [r.match_id for r in p.decide(query(100.2), [nb(entry(3, LID, 31.0), 0.9, 0)])] == [3]


# --- end to end with a memory -------------------------------------------------------------------------------------


def test_match_against_a_scene_memory():
    mem = SceneMemory(MemoryConfig.from_dict({"dim": 8, "admission": {"enabled": False}}))
    rng = np.random.default_rng(0)
    place = rng.standard_normal(8)
    other = rng.standard_normal(8)
    mem.add(place + 0.05 * rng.standard_normal(8), "lidar", "/points", "velodyne", 10 * S, Pose(0, 0, 0), "d1")
    mem.add(other, "lidar", "/points", "velodyne", 11 * S, Pose(90, 0, 0), "d1")
    mem.add(place, "camera", "/image", "cam", 12 * S, Pose(0, 0, 0), "d1")  # same modality as the query: not routed
    mem.add(place, "lidar", "/points", "velodyne", 95 * S, Pose(1, 0, 0), "d1")  # too recent for a query at 100 s
    p = MatchPolicy(PolicyConfig.from_dict({"min_score": 0.8, "exclude_recent_s": 30.0}))
    q = Query(CAM, "/image", 100 * S, "cam", place, Pose(2, 0, 0), "d2", 0)
    [r] = p.match(mem, q)
    assert (r.match_id, r.match_modality, r.match_topic, r.match_frame_id) == (1, LID, "/points", "velodyne")
    assert r.score > 0.9 and r.distance == pytest.approx(2.0) and r.query_topic == "/image"
    assert p.match(mem, Query(CAM, "/image", 100 * S + S // 10, "cam", place, Pose(2, 0, 0), "d2", 0)) == []


def test_merge_neighbors_keeps_each_entry_once_with_its_best_score():
    a, b, c, d = (entry(i) for i in (1, 2, 3, 4))
    first = [nb(a, 0.9, 0), nb(b, 0.5, 1)]
    second = [nb(c, 0.95, 0), nb(b, 0.7, 1), nb(a, 0.2, 2)]
    third = [nb(d, 0.7, 0)]  # ties with b's best: the earlier list wins
    merged = merge_neighbors([first, second, third], k=10)
    assert [(n.entry.id, n.score, n.rank) for n in merged] == [(3, 0.95, 0), (1, 0.9, 1), (2, 0.7, 2), (4, 0.7, 3)]
    assert [n.entry.id for n in merge_neighbors([first, second, third], k=2)] == [3, 1]
    assert merge_neighbors([], k=3) == [] and merge_neighbors([[], []], k=3) == []


def test_query_views_search_the_query_modality_only():
    """A LiDAR scan also seen at other headings: its views find LiDAR entries its own vector does not; they never
    search the other routed modalities."""
    mem = SceneMemory(MemoryConfig.from_dict({"dim": 8, "admission": {"enabled": False}}))
    e = np.eye(8, dtype=np.float32)
    mem.add(e[1], "lidar", "/points", "velodyne", 10 * S, Pose(0, 0, 0), "d1")  # the place, seen turned
    mem.add(e[2], "camera", "/image", "cam", 11 * S, Pose(50, 0, 0), "d1")  # elsewhere, like a view
    p = MatchPolicy(PolicyConfig.from_dict({"min_score": 0.8, "routes": {"lidar": ["lidar", "camera"]}}))
    q = Query(LID, "/points", 100 * S, "velodyne", e[0], Pose(1, 0, 0), "d2", 0)
    assert p.match(mem, q) == []
    [r] = p.match(mem, Query(LID, "/points", 100 * S, "velodyne", e[0], Pose(1, 0, 0), "d2", 0,
                             views=np.stack([e[2], e[1]])))
    assert (r.match_id, r.match_modality) == (1, LID)
    assert r.score == pytest.approx(1 - PolicyConfig().turned_view_penalty)  # lowered by the penalty
    # the penalty is tunable: with 0.25 the turned view's 0.75 is below min_score 0.8
    p.reconfigure(PolicyConfig.from_dict({"min_score": 0.8, "routes": {"lidar": ["lidar", "camera"]},
                                          "turned_view_penalty": 0.25}))
    p.reset()
    assert p.match(mem, Query(LID, "/points", 100 * S, "velodyne", e[0], None, "d2", 0, views=e[1:2])) == []
    # and the scan as scanned wins a near tie against a turned view
    mem.add(0.8 * e[0] + 0.6 * e[3], "lidar", "/points", "velodyne", 12 * S, Pose(0, 0, 0), "d1")
    p.reconfigure(PolicyConfig.from_dict({"min_score": 0.5, "routes": {"lidar": ["lidar"]}, "top_k": 1}))
    p.reset()
    [r] = p.match(mem, Query(LID, "/points", 100 * S, "velodyne", e[0], None, "d2", 0,
                             views=(0.75 * e[1] + np.sqrt(1 - 0.75**2) * e[4])[None]))
    assert r.match_id == 3 and r.score == pytest.approx(0.8)
    # views of a query whose modality it does not search are not used
    p.reconfigure(PolicyConfig.from_dict({"min_score": 0.8, "routes": {"lidar": ["camera"]}}))
    p.reset()
    assert p.match(mem, Query(LID, "/points", 200 * S, "velodyne", e[0], None, "d2", 0, views=e[1:3])) == []
