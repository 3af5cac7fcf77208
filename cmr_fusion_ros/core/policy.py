"""Match policy: the rules that turn the neighbours of a query into match events.

For each query embedding the policy says which memory modalities to search (``routes``), how many neighbours
(``top_k``), the score threshold, the temporal exclusion (entries newer than ``query stamp - exclude_recent_s`` are
not candidates: they are what the robot just saw, not a revisit) and optionally the session exclusion. It then
decides which candidates become events:

* **Sequence consistency** (``sequence_length`` N > 1): for each (query topic, matched modality) the best candidate
  of each query must agree with the previous query's best (matched poses within ``sequence_max_jump_m``, or, without
  poses, matched stamps within ``sequence_max_gap_s``) for N consecutive queries before it may fire. A query without a
  candidate for that modality breaks the chain. With N = 1 every candidate may fire.
* **Debounce** (one event per revisit, not one per frame): a fired candidate opens a *revisit* for
  (query topic, matched modality, place). A later candidate of the same place is suppressed and refreshes the
  revisit; the revisit follows the matched place along (its anchor moves to the latest supporting entry). Same place
  means matched poses within ``place_radius_m`` when both are known, else matched stamps within ``place_window_s``.
  A revisit ends when no candidate supported it for ``debounce_s`` seconds of query time, or when the query moved
  more than ``rearm_distance_m`` from where it fired (0 disables that rule). Then the place can fire again.

A query may carry more embeddings of its scan seen at other headings (``Query.views``: a LiDAR scan turned, see
``encoders.lidar_views``): they search the memory entries of the query's own modality too, their scores lowered by
``turned_view_penalty``; each entry keeps its best score and the ``top_k`` best of all go on to the rules above.

All times are the queries' own stamps (so a bag replays deterministically). The policy is stateful and thread-safe.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from cmr_fusion_ros.core.calibration import ScoreCalibration
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory.entry import MemoryEntry, Neighbor
from cmr_fusion_ros.core.types import Modality, Pose
from cmr_fusion_ros.core.validate import no_unknown, read_bool, read_float, read_int, section

if TYPE_CHECKING:
    from cmr_fusion_ros.core.memory.scene import SceneMemory

__all__ = ["MatchPolicy", "MatchResult", "PolicyConfig", "Query", "SearchRequest", "merge_neighbors"]

_NS = 1_000_000_000


def _default_routes() -> tuple[tuple[Modality, tuple[Modality, ...]], ...]:
    mods = tuple(Modality)
    return tuple((q, tuple(m for m in mods if m != q)) for q in mods)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Validated policy parameters; ``routes`` maps a query modality to the memory modalities it searches (every
    other modality by default; a modality missing from ``routes`` does not search)."""

    routes: tuple[tuple[Modality, tuple[Modality, ...]], ...] = field(default_factory=_default_routes)
    top_k: int = 5
    min_score: float = 0.5
    exclude_recent_s: float = 30.0
    exclude_same_session: bool = False
    debounce_s: float = 10.0
    rearm_distance_m: float = 0.0
    place_radius_m: float = 5.0
    place_window_s: float = 5.0
    sequence_length: int = 1
    sequence_max_jump_m: float = 5.0
    sequence_max_gap_s: float = 2.0
    turned_view_penalty: float = 0.05  # subtracted from the scores of a query's turned views (Query.views)
    min_probability: float = 0.0  # calibrated P(true revisit) threshold (core.calibration; 0 = off)

    KEYS = (
        "routes", "top_k", "min_score", "exclude_recent_s", "exclude_same_session", "debounce_s",
        "rearm_distance_m", "place_radius_m", "place_window_s", "sequence_length", "sequence_max_jump_m",
        "sequence_max_gap_s", "turned_view_penalty", "min_probability",
    )

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "policy") -> "PolicyConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        routes = _default_routes() if "routes" not in d else cls._routes(d["routes"], f"{prefix}.routes")
        return cls(
            routes=routes,
            top_k=read_int(d, prefix, "top_k", 5, 1, 1000),
            min_score=read_float(d, prefix, "min_score", 0.5, -1.0, 1.0),
            exclude_recent_s=read_float(d, prefix, "exclude_recent_s", 30.0, 0.0),
            exclude_same_session=read_bool(d, prefix, "exclude_same_session", False),
            debounce_s=read_float(d, prefix, "debounce_s", 10.0, 0.0),
            rearm_distance_m=read_float(d, prefix, "rearm_distance_m", 0.0, 0.0),
            place_radius_m=read_float(d, prefix, "place_radius_m", 5.0, 0.0),
            place_window_s=read_float(d, prefix, "place_window_s", 5.0, 0.0),
            sequence_length=read_int(d, prefix, "sequence_length", 1, 1, 1000),
            sequence_max_jump_m=read_float(d, prefix, "sequence_max_jump_m", 5.0, 0.0),
            sequence_max_gap_s=read_float(d, prefix, "sequence_max_gap_s", 2.0, 0.0),
            turned_view_penalty=read_float(d, prefix, "turned_view_penalty", 0.05, 0.0, 2.0),
            min_probability=read_float(d, prefix, "min_probability", 0.0, 0.0, 1.0),
        )

    @staticmethod
    def _routes(value: Any, key: str) -> tuple[tuple[Modality, tuple[Modality, ...]], ...]:
        allowed = "a mapping like {camera: [lidar, radar], lidar: [camera]} of modalities (camera | lidar | radar)"
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, allowed)
        out = []
        for q, targets in value.items():
            try:
                qm = Modality.parse(q)
            except ConfigError:
                raise ConfigError(f"{key}.{q}", q, "a modality name: camera | lidar | radar") from None
            if isinstance(targets, str) or not isinstance(targets, Sequence):
                raise ConfigError(f"{key}.{q}", targets, "a list of modalities (camera | lidar | radar)")
            try:
                tm = tuple(dict.fromkeys(Modality.parse(t) for t in targets))
            except ConfigError:
                raise ConfigError(f"{key}.{q}", targets, "a list of modalities (camera | lidar | radar)") from None
            out.append((qm, tm))
        return tuple(out)

    def targets(self, query_modality: Modality) -> tuple[Modality, ...]:
        for q, t in self.routes:
            if q == query_modality:
                return t
        return ()


@dataclass(frozen=True, slots=True)
class Query:
    """One query embedding and its origin. ``id`` is the memory id when the query was also inserted, else 0.
    ``views``: more embeddings of the same scan seen at other headings (``(V, D)``, LiDAR: ``turned_views``); they
    search the entries of the query's own modality too, their scores lowered by ``turned_view_penalty``, each entry
    keeping its best score."""

    modality: Modality
    topic: str
    stamp_ns: int
    frame_id: str
    vector: np.ndarray = field(compare=False, repr=False)
    pose: Pose | None = None
    session: str = ""
    id: int = 0
    views: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """The arguments of ``SceneMemory.search`` for one query."""

    modalities: tuple[Modality, ...]
    k: int
    exclude_newer_than_ns: int | None
    exclude_session: str | None
    min_score: float

    def kwargs(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities,
            "exclude_newer_than_ns": self.exclude_newer_than_ns,
            "exclude_session": self.exclude_session,
            "min_score": self.min_score,
        }


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Every value of a ``cmr_fusion_msgs/MatchEvent`` (the header is the query's stamp and frame)."""

    query_modality: Modality
    query_topic: str
    query_id: int
    query_stamp_ns: int
    query_frame_id: str
    match_modality: Modality
    match_topic: str
    match_id: int
    match_stamp_ns: int
    match_frame_id: str
    score: float
    rank: int
    query_pose: Pose | None
    match_pose: Pose | None
    distance: float  # metres between the two positions; NaN unless both poses are known
    # calibrated P(true revisit) of the score; NaN when the pair has no calibration (a function of score: not compared)
    probability: float = field(default=math.nan, compare=False)

    @classmethod
    def of(cls, query: Query, neighbor: Neighbor, probability: float = math.nan) -> "MatchResult":
        e = neighbor.entry
        dist = query.pose.distance_to(e.pose) if query.pose is not None and e.pose is not None else math.nan
        return cls(
            query_modality=query.modality,
            query_topic=query.topic,
            query_id=query.id,
            query_stamp_ns=query.stamp_ns,
            query_frame_id=query.frame_id,
            match_modality=e.modality,
            match_topic=e.topic,
            match_id=e.id,
            match_stamp_ns=e.stamp_ns,
            match_frame_id=e.frame_id,
            score=float(neighbor.score),
            rank=neighbor.rank,
            query_pose=query.pose,
            match_pose=e.pose,
            distance=dist,
            probability=probability,
        )


@dataclass
class _Revisit:
    modality: Modality
    anchor_pose: Pose | None
    anchor_stamp_ns: int
    last_seen_ns: int
    fired_query_pose: Pose | None


def merge_neighbors(lists: Sequence[Sequence[Neighbor]], k: int) -> list[Neighbor]:
    """The ``k`` best of several searches' neighbours, best first: each entry once, with its best score (ties: the
    earlier list and rank first), ranks renumbered."""
    best: dict[int, tuple[float, int, int, Neighbor]] = {}
    for i, found in enumerate(lists):
        for n in found:
            key = (-float(n.score), i, n.rank, n)
            old = best.get(n.entry.id)
            if old is None or key[:3] < old[:3]:
                best[n.entry.id] = key
    ranked = sorted(best.values(), key=lambda t: t[:3])
    return [Neighbor(n.entry, n.score, rank) for rank, (*_, n) in enumerate(ranked[:k])]


@dataclass
class _Chain:
    last: MemoryEntry
    count: int


class MatchPolicy:
    """Stateful match rules (see the module docstring). One instance per running pipeline."""

    def __init__(self, config: PolicyConfig | None = None, calibration: ScoreCalibration | None = None) -> None:
        self._config = config if config is not None else PolicyConfig()
        self.calibration = calibration or ScoreCalibration({})  # the pipeline sets it from the model cards
        self._lock = threading.Lock()
        self._revisits: dict[str, list[_Revisit]] = {}
        self._chains: dict[tuple[str, Modality], _Chain] = {}
        self.suppressed = 0  # candidates suppressed by debounce or sequence rules, for diagnostics

    @property
    def config(self) -> PolicyConfig:
        return self._config

    def reconfigure(self, config: PolicyConfig) -> None:
        """Run-time tuning (threshold, k, debounce, ...): revisit and sequence state are kept."""
        if not isinstance(config, PolicyConfig):
            raise ConfigError("policy", config, "a PolicyConfig")
        with self._lock:
            self._config = config

    def reset(self) -> None:
        """Forget every revisit and sequence (e.g. after the memory was cleared)."""
        with self._lock:
            self._revisits.clear()
            self._chains.clear()

    def request(self, query: Query) -> SearchRequest | None:
        """What to search for this query; None when its modality searches nothing."""
        c = self._config
        targets = c.targets(query.modality)
        if not targets:
            return None
        return SearchRequest(
            modalities=targets,
            k=c.top_k,
            exclude_newer_than_ns=query.stamp_ns - round(c.exclude_recent_s * _NS),
            exclude_session=query.session if c.exclude_same_session else None,
            min_score=c.min_score,
        )

    def match(self, memory: "SceneMemory", query: Query) -> list[MatchResult]:
        """Search ``memory`` for ``query`` and decide; the one call a node needs."""
        req = self.request(query)
        if req is None:
            return self.decide(query, [])
        neighbors = memory.search(query.vector, req.k, **req.kwargs())
        if query.views is not None and len(query.views) and query.modality in req.modalities:
            own = {**req.kwargs(), "modalities": (query.modality,)}
            pen = self._config.turned_view_penalty
            turned = [[Neighbor(n.entry, n.score - pen, n.rank) for n in found]
                      for found in memory.search_many(query.views, req.k, **own)]
            neighbors = merge_neighbors([neighbors, *turned], req.k)
        return self.decide(query, neighbors)

    def decide(self, query: Query, neighbors: Sequence[Neighbor]) -> list[MatchResult]:
        """Turn the neighbours of ``query`` (best first) into events, updating the debounce and sequence state.
        Neighbours that break the request's rules (route, threshold, time, session) are ignored, so lists from any
        source are safe."""
        c = self._config
        t = query.stamp_ns
        targets = c.targets(query.modality)
        newest = t - round(c.exclude_recent_s * _NS)
        prob = {id(n): self.calibration.probability(query.modality, n.entry.modality, float(n.score))
                for n in neighbors}
        candidates = [
            n for n in neighbors
            if n.entry.modality in targets
            and not prob[id(n)] < c.min_probability  # an uncalibrated pair (NaN) is held to min_score only
            and not (query.id and n.entry.id == query.id)  # never the query's own entry
            and n.score >= c.min_score
            and n.entry.stamp_ns <= newest
            and not (c.exclude_same_session and n.entry.session == query.session)
        ]
        candidates.sort(key=lambda n: n.rank)
        with self._lock:
            revisits = self._expire(query)
            if c.sequence_length > 1:
                firing = self._sequence(query, candidates, targets)
            else:
                firing = candidates
            out: list[MatchResult] = []
            firing_ids = {id(n) for n in firing}
            for n in candidates:
                rv = self._find(revisits, n.entry)
                if rv is not None:
                    rv.last_seen_ns = t
                    rv.anchor_pose, rv.anchor_stamp_ns = n.entry.pose, n.entry.stamp_ns
                    if id(n) in firing_ids:
                        self.suppressed += 1
                    continue
                if id(n) not in firing_ids:
                    self.suppressed += 1
                    continue
                revisits.append(_Revisit(n.entry.modality, n.entry.pose, n.entry.stamp_ns, t, query.pose))
                out.append(MatchResult.of(query, n, prob[id(n)]))
            return out

    # --- internals ----------------------------------------------------------------------------------------------

    def _expire(self, query: Query) -> list[_Revisit]:
        c = self._config
        t = query.stamp_ns
        window = round(c.debounce_s * _NS)
        keep = []
        for rv in self._revisits.get(query.topic, []):
            if t - rv.last_seen_ns > window:
                continue
            if (
                c.rearm_distance_m > 0
                and query.pose is not None
                and rv.fired_query_pose is not None
                and query.pose.distance_to(rv.fired_query_pose) > c.rearm_distance_m
            ):
                continue
            keep.append(rv)
        self._revisits[query.topic] = keep
        return keep

    def _find(self, revisits: list[_Revisit], entry: MemoryEntry) -> _Revisit | None:
        c = self._config
        for rv in revisits:
            if rv.modality != entry.modality:
                continue
            if entry.pose is not None and rv.anchor_pose is not None:
                if entry.pose.distance_to(rv.anchor_pose) <= c.place_radius_m:
                    return rv
            elif abs(entry.stamp_ns - rv.anchor_stamp_ns) <= round(c.place_window_s * _NS):
                return rv
        return None

    def _sequence(self, query: Query, candidates: list[Neighbor], targets: tuple[Modality, ...]) -> list[Neighbor]:
        c = self._config
        firing = []
        for mod in targets:
            key = (query.topic, mod)
            best = next((n for n in candidates if n.entry.modality == mod), None)
            if best is None:
                self._chains.pop(key, None)
                continue
            chain = self._chains.get(key)
            if chain is not None and self._consistent(chain.last, best.entry):
                chain.count += 1
                chain.last = best.entry
            else:
                chain = self._chains[key] = _Chain(best.entry, 1)
            if chain.count >= c.sequence_length:
                firing.append(best)
        return firing

    def _consistent(self, prev: MemoryEntry, cur: MemoryEntry) -> bool:
        c = self._config
        if prev.pose is not None and cur.pose is not None:
            return prev.pose.distance_to(cur.pose) <= c.sequence_max_jump_m
        return abs(cur.stamp_ns - prev.stamp_ns) <= round(c.sequence_max_gap_s * _NS)
