"""The fusion pipeline: frames in, match results out (no ROS).

One implementation serves the all-in-one node, the split memory node (embeddings in) and offline processing of a
bag (both through :class:`cmr_fusion_ros.core.stream.StreamRunner`), so live and offline runs give the same events
for the same message order.

Per frame, the moment it is taken from its stream's queue (no frame waits for another sensor):
:meth:`FusionPipeline.embed` checks for a time jump, looks up the frame's pose and runs the frame through its topic's
route (:class:`cmr_fusion_ros.core.embed.FrameEmbedder`: merge, views, preprocess, encode); then
:meth:`FusionPipeline.commit` searches the memory through the match policy (routes, threshold, temporal exclusion,
debounce, sequences) and inserts the embedding. A query never finds itself (it is inserted after its search) nor
frames of the same instant (``policy.exclude_recent_s``). Embedding may run concurrently for different streams;
commits are serialised by the caller (the stream runner commits in arrival order). When LiDAR queries search LiDAR
entries, a LiDAR scan is also embedded as seen turned to ``encoders.lidar_views`` headings
(``preprocess.turned_views``) and every view searches the LiDAR entries (a place driven in another direction); only
the scan as it is goes into the memory. Split deployments (embeddings in) get the views with the embedding
(``EmbeddingInput.views`` from ``cmr_fusion_msgs/Embedding.views``).

Time jumps (a bag that loops, a clock reset): a frame or embedding stamped more than the jump threshold
(``sync.time_jump_s``; 0 = 1 s) before the newest one of its own topic starts a new history for that topic's
multi-scan merging; when it is also that far before the newest frame of the current time line, the policy forgets
its revisits and sequences (their times lie in the new line's future, so they would suppress every revisit until
time caught up). An odometry pose stamped that far before the newest pose clears the pose buffer and the merge
histories. The memory is kept. (Streams are compared with themselves first because they may lag one another.)

Decoding (with the input limits ``limits.*``) is :mod:`cmr_fusion_ros.core.decode`; its names are re-exported here
for older imports.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmr_fusion_ros.core.accumulate import STAT_KEYS
from cmr_fusion_ros.core.calibration import ScoreCalibration
from cmr_fusion_ros.core.config import FusionConfig, InputLimits
from cmr_fusion_ros.core.decode import (DEFAULT_LIMITS, IMAGE_TYPES, Frame, check_limits, decode_sensor,
                                        frame_from)
from cmr_fusion_ros.core.embed import Embedded, Encoder, FrameEmbedder
from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.memory import SceneMemory, open_memory
from cmr_fusion_ros.core.rig import RigAdapter, SensorRig
from cmr_fusion_ros.core.policy import MatchPolicy, MatchResult, Query
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = [
    "DEFAULT_LIMITS",
    "EmbedJob",
    "EmbeddingInput",
    "InputLimits",
    "check_limits",
    "FramePath",
    "FusionPipeline",
    "model_cards",
    "PipelineOutput",
    "decode_sensor",
    "embedding_views",
    "frame_from",
    "IMAGE_TYPES",
]


@dataclass(frozen=True, slots=True)
class EmbeddingInput:
    """An embedding computed elsewhere (split deployment: ``cmr_fusion_msgs/Embedding``)."""

    modality: Modality
    topic: str
    frame_id: str
    stamp_ns: int
    vector: np.ndarray = field(repr=False)
    pose: Pose | None = None
    model_id: str = ""
    views: np.ndarray | None = field(default=None, repr=False)  # the scan at other headings (Query.views)
    preprocess_ms: float = field(default=0.0, compare=False)  # merge + preprocess, when embedded here
    encode_ms: float = field(default=0.0, compare=False)
    topic_jumped: bool = field(default=False, compare=False)  # its topic's stamps went back (set by embed)


def embedding_views(values: Any, dim: int) -> np.ndarray | None:
    """``cmr_fusion_msgs/Embedding.views`` (views one after another, ``dim`` values each) as a ``(V, dim)`` array;
    None when empty."""
    arr = np.asarray(values, np.float32).reshape(-1)
    if arr.size == 0:
        return None
    if dim <= 0 or arr.size % dim:
        raise ConversionError("cmr_fusion_msgs/Embedding", "views",
                              f"{arr.size} values are not whole views of the vector's {dim} values")
    return arr.reshape(-1, dim)


@dataclass(frozen=True, slots=True)
class EmbedJob:
    """A frame ready for its route (:meth:`FusionPipeline.prepare`)."""

    frame: Frame
    route: FrameEmbedder
    pose: Pose | None
    views: int
    jumped: bool  # its topic's stamps went back
    reset: bool  # forget the route's merge history first


@dataclass(frozen=True, slots=True)
class FramePath:
    """What happened to one frame: timings (ms; search includes the policy), the memory id it got (0: not
    inserted) and why not."""

    modality: Modality
    topic: str
    stamp_ns: int
    encode_ms: float
    search_ms: float
    entry_id: int
    rejected: str = ""
    has_pose: bool = False
    preprocess_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class PipelineOutput:
    stamp_ns: int
    frame_id: str
    events: tuple[MatchResult, ...]
    frames: tuple[FramePath, ...]


def model_cards(config: FusionConfig) -> dict[Modality, Any]:
    """The model cards of the enabled modalities in ``encoders.models_dir`` (or the installed models) that exist,
    without loading the ONNX models (a memory node's embeddings come from encoder nodes)."""
    from cmr_fusion_ros.core.encoder import card_path, load_card, model_path

    if config.encoders.models_dir:
        models = config.encoders.models_dir
    else:
        from cmr_fusion_ros.paths import models_dir as default_models_dir

        models = default_models_dir()
    return {m: load_card(model_path(models, m)) for m in config.enabled_modalities
            if card_path(model_path(models, m)).exists()}


class FusionPipeline:
    """Encoders + memory + policy. ``embed`` may run concurrently for different topics (one caller per topic);
    ``commit`` and ``process_embeddings`` from one caller at a time (the memory and policy are themselves safe for
    concurrent readers such as a query service)."""

    def __init__(self, config: FusionConfig, encoders: Mapping[Modality, Encoder], memory: SceneMemory,
                 policy: MatchPolicy | None = None, poses: PoseBuffer | None = None, session: str | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.config = config
        self.encoders = dict(encoders)
        self.memory = memory
        self.policy = policy or MatchPolicy(config.policy)
        if not self.policy.calibration:  # P(true revisit) per pair from the model cards (core.calibration)
            self.policy.calibration = ScoreCalibration.from_cards(self.encoders)
        self.poses = poses
        self.session = session if session is not None else config.session_id()
        # frame of the poses (odometry): the odometry messages' frame once one came, else the configured one
        self.pose_frame_id = config.output.marker_frame
        self._clock = clock
        self.jump_back_ns = config.sync.jump_back_ns  # sync.time_jump_s, or 1 s
        self.time_jumps = 0  # times the policy state was reset because time went back
        self._newest_ns: int | None = None
        self._newest_pose_ns: int | None = None
        self._recorded_rig: SensorRig | None = None  # the sensors a bag recorded (process); parameters win
        self._embedders: dict[str, FrameEmbedder] = {}  # per topic: merge -> views -> preprocess -> encode
        self._time_lock = threading.Lock()  # the newest stamps (streams embed concurrently)
        self._newest_by_topic: dict[str, int] = {}
        for m, enc in self.encoders.items():
            if enc.dim != memory.dim:
                raise ConfigError("memory.dim", memory.dim, f"the {m.value} encoder's embedding size {enc.dim}")

    @classmethod
    def from_config(cls, config: FusionConfig, *, memory_dir: str | None = None, load_encoders: bool = True,
                    poses: PoseBuffer | None = None, namespace: str = "") -> "FusionPipeline":
        """Build encoders (from ``encoders.models_dir`` or the installed models) and open the memory (``namespace``:
        the node's, the robot id when ``memory.robot_id`` is '')."""
        encoders: dict[Modality, Encoder] = {}
        if load_encoders:
            from cmr_fusion_ros.core.encoder import load_encoders as _load

            enc = config.encoders
            encoders = dict(_load(enc.models_dir or None, config.enabled_modalities, providers=enc.providers,
                                  intra_op_threads=enc.intra_op_threads, batch_size=enc.batch_size,
                                  warmup_runs=enc.warmup_runs))
        memory = open_memory(config.memory, memory_dir, namespace=namespace)
        if poses is None and config.odometry.topic:
            poses = PoseBuffer(max_gap_ns=round(config.odometry.max_gap_s * 1e9),
                               max_extrapolation_ns=round(config.odometry.max_extrapolation_s * 1e9))
        policy = None
        if not load_encoders:  # a memory node: the events' probabilities from the cards of the installed models
            policy = MatchPolicy(config.policy, ScoreCalibration.from_cards(model_cards(config)))
        return cls(config, encoders, memory, policy=policy, poses=poses)

    def set_policy(self, policy_config) -> None:
        """Run-time tuning (thresholds, k, debounce...): the policy keeps its revisit state."""
        self.policy.reconfigure(policy_config)
        self.config = dataclasses.replace(self.config, policy=policy_config)

    def add_pose(self, stamp_ns: int, pose: Pose, frame_id: str = "") -> bool:
        """Feed one odometry pose (``frame_id``: its header frame, named in the events); returns True when it
        started a new time line (the older poses were dropped)."""
        if self.poses is None:
            return False
        with self._time_lock:
            if frame_id:
                self.pose_frame_id = frame_id
            jumped = self._newest_pose_ns is not None and stamp_ns < self._newest_pose_ns - self.jump_back_ns
            if jumped:
                self.poses.clear()
                self._newest_pose_ns = None
                for emb in list(self._embedders.values()):
                    emb.reset()
            self._newest_pose_ns = stamp_ns if self._newest_pose_ns is None else max(self._newest_pose_ns, stamp_ns)
            self.poses.add(stamp_ns, pose)
        return jumped

    def reset_time(self) -> None:
        """Start a new time line now (the clock jumped back): forget the policy's revisits and sequences and the
        merged scans."""
        with self._time_lock:
            self._reset_time_locked()
            self._newest_by_topic.clear()
            for emb in list(self._embedders.values()):
                emb.reset()

    def _reset_time_locked(self) -> None:
        self.policy.reset()
        self._newest_ns = None
        self.time_jumps += 1

    def _check_time(self, stamp_ns: int, topic_jumped: bool) -> None:
        """At a commit: a frame whose own topic went back in time, stamped this far before the newest frame of the
        current time line, starts a new time line for the policy. (Both conditions: streams may lag one another,
        which is no jump; and the other streams of a bag that loops follow the first one into the new line.)"""
        with self._time_lock:
            if topic_jumped and self._newest_ns is not None and stamp_ns < self._newest_ns - self.jump_back_ns:
                self._reset_time_locked()
            self._newest_ns = stamp_ns if self._newest_ns is None else max(self._newest_ns, stamp_ns)

    def _topic_jumped(self, topic: str, stamp_ns: int) -> bool:
        """Before embedding: whether ``topic``'s own stamps went back (streams are embedded concurrently and may lag
        one another, so each is compared with itself)."""
        with self._time_lock:
            last = self._newest_by_topic.get(topic)
            jumped = last is not None and stamp_ns < last - self.jump_back_ns
            self._newest_by_topic[topic] = stamp_ns if last is None or jumped else max(last, stamp_ns)
            return jumped

    def pose_at(self, stamp_ns: int) -> Pose | None:
        return self.poses.lookup(stamp_ns) if self.poses is not None else None

    @property
    def has_accumulation(self) -> bool:
        """True once a multi-scan radar model has merged (or tried to merge) scans."""
        return any(e.multi_scan for e in self._embedders.values())

    def accumulation_stats(self) -> dict[str, int]:
        """Multi-scan radar (models with ``scans > 1``): earlier scans merged in, wanted but not found, and scans
        that had no odometry pose (used alone)."""
        total = dict.fromkeys(STAT_KEYS, 0)
        for emb in self._embedders.values():
            for key, value in emb.stats().items():
                total[key] += value
        return total

    def multi_scan_modalities(self) -> list[Modality]:
        """The modalities whose model merges several scans (they need the odometry)."""
        return [m for m, e in self.encoders.items() if FrameEmbedder.of(e).multi_scan]

    def set_recorded_rig(self, rig: SensorRig | None) -> None:
        """The mounts and camera intrinsics a bag recorded (``bag.rig_info.read_rig``); ``rig.*`` parameters win.
        Call before the first frame (the topics' routes are made anew)."""
        self._recorded_rig = rig
        self._embedders.clear()

    def rig_adapter(self, modality: Modality) -> RigAdapter | None:
        """A fresh adapter bringing a ``modality`` sensor's data to the canonical rig (``rig.*``,
        :mod:`cmr_fusion_ros.core.rig`); None when ``rig.enabled`` is false."""
        if not self.config.rig.enabled:
            return None
        return RigAdapter(modality, self.config.rig.sensor_rig(self._recorded_rig), self.config.rig)

    def embedder(self, modality: Modality, topic: str) -> FrameEmbedder:
        """The route of ``topic`` (made on its first frame)."""
        emb = self._embedders.get(topic)
        if emb is None:
            encoder = self.encoders.get(modality)
            if encoder is None:
                raise ConfigError(f"streams.{modality.value}.enabled", True, "a loaded encoder for this modality")
            emb = self._embedders[topic] = FrameEmbedder.of(encoder, clock=self._clock,
                                                            adapter=self.rig_adapter(modality))
        return emb

    def embed(self, frame: Frame) -> EmbeddingInput:
        """One frame through its topic's route, with its pose and the LiDAR views the routes ask for now (a topic
        whose stamps went back starts its multi-scan history anew): :meth:`run` of :meth:`prepare`."""
        return self.run(self.prepare(frame))

    def prepare(self, frame: Frame) -> EmbedJob:
        """What embedding ``frame`` depends on outside its route, read now: the time-jump check of its topic, a
        history reset asked for (odometry went back), its pose, the LiDAR views. Call in the streams' order."""
        route = self.embedder(frame.modality, frame.topic)
        jumped = self._topic_jumped(frame.topic, frame.stamp_ns)
        reset = route.take_reset() or jumped
        return EmbedJob(frame, route, self.pose_at(frame.stamp_ns), self.views_for(frame.modality), jumped, reset)

    def run(self, job: EmbedJob) -> EmbeddingInput:
        """The route of a prepared frame (merge, views, preprocess, encode); one caller per topic at a time, in the
        topic's order (another thread or process may run it: offline processing embeds ahead of its commits in a
        worker per topic)."""
        if job.reset:
            job.route.clear_history()
        return self.embedding_input(job, job.route.embed(job.frame, job.pose, job.views))

    @staticmethod
    def embedding_input(job: EmbedJob, out: Embedded) -> EmbeddingInput:
        """What :meth:`run` returns for ``job`` given its route's output (offline processing builds it again from
        the route output its worker sent back)."""
        fr = job.frame
        return EmbeddingInput(fr.modality, fr.topic, fr.frame_id, fr.stamp_ns, out.vector, job.pose, views=out.views,
                              preprocess_ms=out.preprocess_ms, encode_ms=out.encode_ms, topic_jumped=job.jumped)

    def lidar_views(self) -> int:
        """Headings a LiDAR scan is embedded at now: ``encoders.lidar_views`` while LiDAR queries search LiDAR
        entries (the routes may change at run time), else 1."""
        if Modality.LIDAR in self.policy.config.targets(Modality.LIDAR):
            return self.config.encoders.lidar_views
        return 1

    def views_for(self, modality: Modality) -> int:
        """Views a frame of ``modality`` is embedded at now (:meth:`lidar_views` for LiDAR, else 1)."""
        return self.lidar_views() if modality is Modality.LIDAR else 1

    # --- the two entry points ---------------------------------------------------------------------------------

    def commit(self, item: EmbeddingInput) -> PipelineOutput:
        """Search the memory with an embedded frame through the policy, then insert it (a stamp far back in time
        first starts a new time line)."""
        self._check_time(item.stamp_ns, item.topic_jumped)
        return self._search_insert([item], item.stamp_ns, item.frame_id)

    def process_frame(self, frame: Frame) -> PipelineOutput:
        """:meth:`embed` then :meth:`commit` (one caller)."""
        return self.commit(self.embed(frame))

    def process_embeddings(self, items: Sequence[EmbeddingInput]) -> PipelineOutput:
        """Embeddings computed elsewhere (split deployment); poses taken from the items, else from odometry."""
        for it in items:
            self._check_time(it.stamp_ns, self._topic_jumped(it.topic, it.stamp_ns))
        inputs = [it if it.pose is not None else dataclasses.replace(it, pose=self.pose_at(it.stamp_ns))
                  for it in items]
        first = items[0] if items else None
        return self._search_insert(inputs, first.stamp_ns if first else 0, first.frame_id if first else "")

    def _search_insert(self, inputs: list[EmbeddingInput], stamp_ns: int, frame_id: str) -> PipelineOutput:
        found: list[tuple[list[MatchResult], float]] = []
        for it in inputs:
            t0 = self._clock()
            q = Query(it.modality, it.topic, it.stamp_ns, it.frame_id, it.vector, it.pose, self.session,
                      views=it.views, robot=getattr(self.memory, "robot", ""),
                      pose_frame_id=self.pose_frame_id)
            found.append((self.policy.match(self.memory, q), (self._clock() - t0) * 1e3))
        events: list[MatchResult] = []
        paths: list[FramePath] = []
        for it, (results, search_ms) in zip(inputs, found):
            entry_id, rejected = 0, ""
            if self.config.output.insert_queries:
                entry = self.memory.add(it.vector, it.modality, it.topic, it.frame_id, it.stamp_ns, it.pose,
                                        self.session)
                if entry is not None:
                    entry_id = entry.id
                else:
                    rej = self.memory.last_rejection
                    rejected = getattr(getattr(rej, "reason", None), "value", str(rej)) if rej else "rejected"
            events += [dataclasses.replace(r, query_id=entry_id) for r in results]
            paths.append(FramePath(it.modality, it.topic, it.stamp_ns, it.encode_ms, search_ms, entry_id, rejected,
                                   it.pose is not None, it.preprocess_ms))
        return PipelineOutput(stamp_ns, frame_id, tuple(events), tuple(paths))

    def close(self) -> None:
        self.memory.close()
