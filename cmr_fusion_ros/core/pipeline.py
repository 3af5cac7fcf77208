"""The fusion pipeline: frame sets in, match results out (no ROS).

One implementation serves the all-in-one node, the split memory node (embeddings in) and offline processing of a
bag, so live and offline runs give the same events for the same message order.

Per frame set: each frame is preprocessed and encoded by its modality's encoder, its pose looked up, the memory is
searched through the match policy (routes, threshold, temporal exclusion, debounce, sequences), and only then are
the set's embeddings inserted, so a query never finds itself or its sibling frames of the same instant. When LiDAR
queries search LiDAR entries, a LiDAR scan is also embedded as seen turned to ``encoders.lidar_views`` headings
(``preprocess.turned_views``) and every view searches the LiDAR entries (a place driven in another direction); only
the scan as it is goes into the memory. Split deployments (embeddings in) get the views with the embedding
(``EmbeddingInput.views`` from ``cmr_fusion_msgs/Embedding.views``).

Time jumps (a bag that loops, a clock reset): a frame set or embedding stamped more than the jump threshold
(``sync.time_jump_s``; 0 = max(1 s, 2 x (tolerance + timeout))) before the newest one processed, or an odometry pose
stamped that far before the newest pose, starts a new time line: the policy forgets its revisits and sequences
(their times lie in the new line's future, so they would suppress every revisit until time caught up) and the pose
buffer forgets the old line's poses. The memory is kept.

Sensor messages are checked against size limits (``limits.*``, :class:`InputLimits`) before they are decoded.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cmr_fusion_ros.core.accumulate import STAT_KEYS, ScanAccumulator
from cmr_fusion_ros.core.config import FusionConfig, InputLimits
from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.image import convert_color, decode_compressed, decode_image
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pointcloud import decode_cloud
from cmr_fusion_ros.core.preprocess import accumulator_for, turned_views
from cmr_fusion_ros.core.rig import RigAdapter, SensorRig
from cmr_fusion_ros.core.preprocess import batch as preprocess_batch
from cmr_fusion_ros.core.policy import MatchPolicy, MatchResult, Query
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.radar import RadarFields, radar_array
from cmr_fusion_ros.core.sync import Frame, FrameSet
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = [
    "DEFAULT_LIMITS",
    "EmbeddingInput",
    "InputLimits",
    "check_limits",
    "FramePath",
    "FusionPipeline",
    "PipelineOutput",
    "decode_sensor",
    "embedding_views",
    "frame_from",
    "IMAGE_TYPES",
]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_COLOUR = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}


# The limits are the ``limits`` section of FusionConfig (``InputLimits``, re-exported here); nodes and offline
# processing pass ``config.limits``. The defaults are the fallback of every decoding function.
DEFAULT_LIMITS = InputLimits()


def _data_size(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def _compressed_dims(buf: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or a JPEG SOFn header, read without decoding; None when not found."""
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) >= 24 and buf[12:16] == b"IHDR":
        return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")
    if buf[:2] != b"\xff\xd8":
        return None
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                return None
            return int.from_bytes(buf[pos + 7:pos + 9], "big"), int.from_bytes(buf[pos + 5:pos + 7], "big")
        if length < 2:
            return None
        pos += 2 + length
    return None


def check_limits(modality: Modality, msg: Any, *, compressed: bool, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Raise :class:`ConversionError` naming the field when ``msg`` claims more than ``limits`` allow."""
    if modality is Modality.CAMERA and compressed:
        kind = "sensor_msgs/CompressedImage"
        size = _data_size(msg.data)
        if size > limits.max_message_bytes:
            raise ConversionError(kind, "data", f"{size} bytes > limit {limits.max_message_bytes}")
        head = bytes(memoryview(msg.data)[:65536]) if size else b""
        dims = _compressed_dims(head)
        if dims is not None:
            w, h = dims
            if w == 0 or h == 0:
                raise ConversionError(kind, "data", f"header declares an empty {w}x{h} image")
            if w * h > limits.max_image_pixels:
                raise ConversionError(kind, "data", f"header declares {w}x{h} = {w * h} pixels > limit "
                                                    f"{limits.max_image_pixels}")
        return
    if modality is Modality.CAMERA:
        kind = "sensor_msgs/Image"
        h, w = int(msg.height), int(msg.width)
        if h <= 0 or w <= 0:
            raise ConversionError(kind, "height/width", f"empty image {w}x{h}")
        if h * w > limits.max_image_pixels:
            raise ConversionError(kind, "height/width", f"{w}x{h} = {w * h} pixels > limit {limits.max_image_pixels}")
    else:
        kind = "sensor_msgs/PointCloud2"
        h, w = int(msg.height), int(msg.width)
        if h < 0 or w < 0 or h * w > limits.max_points:
            raise ConversionError(kind, "height/width", f"{w}x{h} = {w * h} points; allowed 0..{limits.max_points}")
    size = _data_size(msg.data)
    if size > limits.max_message_bytes:
        raise ConversionError(kind, "data", f"{size} bytes > limit {limits.max_message_bytes}")


def _finite_points(cloud: np.ndarray, modality: Modality, names: tuple[str, ...]) -> np.ndarray:
    """Drop points with a non-finite coordinate (NaN, Inf); a cloud left empty carries nothing to embed (and every
    empty cloud would embed alike, so they would all "match" each other): rejected."""
    flat = cloud.reshape(-1)
    have = [n for n in names if n in (flat.dtype.names or ())]
    for n in names[:3]:
        if n not in have:
            raise ConversionError("sensor_msgs/PointCloud2", f"fields[{n!r}]",
                                  f"field missing; the cloud has {list(flat.dtype.names or ())}")
    if have and flat.shape[0]:
        ok = np.ones(flat.shape[0], dtype=bool)
        for n in have:
            col = flat[n]
            if col.dtype.kind == "f":
                ok &= np.isfinite(col).reshape(col.shape[0], -1).all(axis=1)
        if not ok.all():
            flat = flat[ok]
    if flat.shape[0] == 0:
        raise ConversionError("sensor_msgs/PointCloud2", "data",
                              f"no {modality.value} point with finite {', '.join(have) or 'coordinates'}: nothing to embed")
    return flat


def decode_sensor(modality: Modality, msg: Any, *, compressed: bool, radar_fields: RadarFields = RadarFields(),
                  limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a sensor message (rclpy or rosbags object) into what the encoder of ``modality`` takes.

    camera: ``H x W x 3`` uint8 RGB; lidar: structured cloud, points with a non-finite x/y/z dropped; radar: x, y,
    z, doppler, rcs with non-finite rows dropped. Raises :class:`ConversionError` (naming the field) for anything
    malformed, beyond ``limits``, or left without a point.
    """
    check_limits(modality, msg, compressed=compressed, limits=limits)
    if modality is Modality.CAMERA:
        if compressed:
            img = decode_compressed(msg, "rgb8")
        else:
            enc = str(msg.encoding)
            if enc not in _COLOUR:
                raise ConversionError("sensor_msgs/Image", "encoding",
                                      f"camera encoders take colour images ({sorted(_COLOUR)}), got {enc!r}")
            img = convert_color(decode_image(msg), enc, "rgb8")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
            raise ConversionError("sensor_msgs/Image", "data", f"decoded to shape {img.shape}, not H x W x 3")
        return img
    if int(msg.height) * int(msg.width) == 0:  # (decode_cloud's NaN filter fails on an empty cloud)
        raise ConversionError("sensor_msgs/PointCloud2", "height/width",
                              f"{int(msg.width)}x{int(msg.height)} = 0 points: nothing to embed")
    cloud = decode_cloud(msg, skip_nans=True)
    if modality is Modality.RADAR:
        return _finite_points(radar_array(cloud, radar_fields), modality, ("x", "y", "z", "doppler", "rcs"))
    return _finite_points(cloud, modality, ("x", "y", "z"))


class Encoder(Protocol):
    dim: int

    def encode(self, items: Sequence[np.ndarray]) -> np.ndarray: ...


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
    complete: bool = True


class FusionPipeline:
    """Encoders + memory + policy. Thread-compatible: call ``process*`` from one thread (the memory and policy are
    themselves safe for concurrent readers such as a query service)."""

    def __init__(self, config: FusionConfig, encoders: Mapping[Modality, Encoder], memory: SceneMemory,
                 policy: MatchPolicy | None = None, poses: PoseBuffer | None = None, session: str | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.config = config
        self.encoders = dict(encoders)
        self.memory = memory
        self.policy = policy or MatchPolicy(config.policy)
        self.poses = poses
        self.session = session if session is not None else config.session_id()
        self._clock = clock
        self.jump_back_ns = config.sync.jump_back_ns  # sync.time_jump_s, or the automatic rule
        self.time_jumps = 0  # times the policy state was reset because time went back
        self._newest_ns: int | None = None
        self._newest_pose_ns: int | None = None
        self._accumulators: dict[str, ScanAccumulator] = {}  # per radar topic, for multi-scan radar models
        self._recorded_rig: SensorRig | None = None  # the sensors a bag recorded (process); parameters win
        self._rig_adapters: dict[str, RigAdapter] = {}  # per topic: its data brought to the canonical rig
        for m, enc in self.encoders.items():
            if enc.dim != memory.dim:
                raise ConfigError("memory.dim", memory.dim, f"the {m.value} encoder's embedding size {enc.dim}")

    @classmethod
    def from_config(cls, config: FusionConfig, *, memory_dir: str | None = None, load_encoders: bool = True,
                    poses: PoseBuffer | None = None) -> "FusionPipeline":
        """Build encoders (from ``encoders.models_dir`` or the installed models) and open the memory."""
        encoders: dict[Modality, Encoder] = {}
        if load_encoders:
            from cmr_fusion_ros.core.encoder import load_encoders as _load

            enc = config.encoders
            encoders = dict(_load(enc.models_dir or None, config.enabled_modalities, providers=enc.providers,
                                  intra_op_threads=enc.intra_op_threads, batch_size=enc.batch_size,
                                  warmup_runs=enc.warmup_runs))
        directory = os.path.expanduser(memory_dir if memory_dir is not None else config.memory.persistence.directory)
        memory = SceneMemory.open(directory, config.memory) if directory else SceneMemory(config.memory)
        if poses is None and config.odometry.topic:
            poses = PoseBuffer(max_gap_ns=round(config.odometry.max_gap_s * 1e9),
                               max_extrapolation_ns=round(config.odometry.max_extrapolation_s * 1e9))
        return cls(config, encoders, memory, poses=poses)

    def set_policy(self, policy_config) -> None:
        """Run-time tuning (thresholds, k, debounce...): the policy keeps its revisit state."""
        self.policy.reconfigure(policy_config)
        self.config = dataclasses.replace(self.config, policy=policy_config)

    def add_pose(self, stamp_ns: int, pose: Pose) -> bool:
        """Feed one odometry pose; returns True when it started a new time line (the older poses were dropped)."""
        if self.poses is None:
            return False
        jumped = self._newest_pose_ns is not None and stamp_ns < self._newest_pose_ns - self.jump_back_ns
        if jumped:
            self.poses.clear()
            self._newest_pose_ns = None
            for acc in self._accumulators.values():
                acc.reset()
        self._newest_pose_ns = stamp_ns if self._newest_pose_ns is None else max(self._newest_pose_ns, stamp_ns)
        self.poses.add(stamp_ns, pose)
        return jumped

    def reset_time(self) -> None:
        """Start a new time line now (the clock jumped back): forget the policy's revisits and sequences."""
        self.policy.reset()
        self._newest_ns = None
        self.time_jumps += 1
        for acc in self._accumulators.values():
            acc.reset()

    def _check_time(self, stamp_ns: int) -> None:
        if self._newest_ns is not None and stamp_ns < self._newest_ns - self.jump_back_ns:
            self.reset_time()
        self._newest_ns = stamp_ns if self._newest_ns is None else max(self._newest_ns, stamp_ns)

    def pose_at(self, stamp_ns: int) -> Pose | None:
        return self.poses.lookup(stamp_ns) if self.poses is not None else None

    @property
    def has_accumulation(self) -> bool:
        """True once a multi-scan radar model has merged (or tried to merge) scans."""
        return bool(self._accumulators)

    def accumulation_stats(self) -> dict[str, int]:
        """Multi-scan radar (models with ``scans > 1``): earlier scans merged in, wanted but not found, and scans
        that had no odometry pose (used alone)."""
        total = dict.fromkeys(STAT_KEYS, 0)
        for acc in self._accumulators.values():
            for key, value in acc.stats().items():
                total[key] += value
        return total

    def multi_scan_modalities(self) -> list[Modality]:
        """The modalities whose model merges several scans (they need the odometry)."""
        return [m for m, e in self.encoders.items() if accumulator_for(getattr(e, "preprocessing", None)) is not None]

    def set_recorded_rig(self, rig: SensorRig | None) -> None:
        """The mounts and camera intrinsics a bag recorded (``bag.rig_info.read_rig``); ``rig.*`` parameters win."""
        self._recorded_rig = rig
        self._rig_adapters.clear()

    def _canonical(self, fr: Frame) -> Any:
        """The frame's data brought to the canonical rig (``rig.*``, :mod:`cmr_fusion_ros.core.rig`)."""
        if not self.config.rig.enabled:
            return fr.data
        adapter = self._rig_adapters.get(fr.topic)
        if adapter is None:
            sensor = self.config.rig.sensor_rig(self._recorded_rig)
            adapter = self._rig_adapters[fr.topic] = RigAdapter(fr.modality, sensor, self.config.rig)
        return adapter(fr.data)

    def _input_data(self, fr: Frame, encoder: Encoder, pose: Pose | None) -> Any:
        """The frame's data at the canonical rig, merged with earlier scans of its topic when the model wants several
        radar scans."""
        data = self._canonical(fr)
        acc = self._accumulators.get(fr.topic)
        if acc is None:
            acc = accumulator_for(getattr(encoder, "preprocessing", None))
            if acc is None:
                return data
            self._accumulators[fr.topic] = acc
        return acc.merge(fr.stamp_ns, data, pose)

    def lidar_views(self) -> int:
        """Headings a LiDAR scan is embedded at now: ``encoders.lidar_views`` while LiDAR queries search LiDAR
        entries (the routes may change at run time), else 1."""
        if Modality.LIDAR in self.policy.config.targets(Modality.LIDAR):
            return self.config.encoders.lidar_views
        return 1

    def _views(self, modality: Modality) -> int:
        return self.lidar_views() if modality is Modality.LIDAR else 1

    # --- the two entry points ---------------------------------------------------------------------------------

    def process_set(self, frame_set: FrameSet) -> PipelineOutput:
        """Encode every frame of a synchronised set, then search and insert them."""
        frames = [frame_set.frames[m] for m in Modality if m in frame_set.frames]
        self._check_time(frame_set.anchor_ns)
        inputs: list[tuple[EmbeddingInput, tuple[float, float]]] = []
        for fr in frames:
            encoder = self.encoders.get(fr.modality)
            if encoder is None:
                raise ConfigError(f"streams.{fr.modality.value}.enabled", True, "a loaded encoder for this modality")
            pose = self.pose_at(fr.stamp_ns)
            t0 = self._clock()
            data = self._input_data(fr, encoder, pose)
            views = None
            if hasattr(encoder, "encode_tensors") and hasattr(encoder, "preprocessing"):
                n_views = self._views(fr.modality)  # timed apart from the network:
                tensor = (turned_views(encoder.preprocessing, data, n_views) if n_views > 1
                          else preprocess_batch(encoder.preprocessing, [data]))
                t1 = self._clock()
                out = encoder.encode_tensors(tensor)
                vec, views = out[0], (out[1:] if n_views > 1 else None)
            else:
                t1 = t0
                vec = encoder.encode([data])[0]
            t2 = self._clock()
            inputs.append((EmbeddingInput(fr.modality, fr.topic, fr.frame_id, fr.stamp_ns, vec, pose, views=views),
                           ((t1 - t0) * 1e3, (t2 - t1) * 1e3)))
        anchor = frames[0] if frames else None
        return self._search_insert(inputs, frame_set.anchor_ns, anchor.frame_id if anchor else "", frame_set.complete)

    def process_embeddings(self, items: Sequence[EmbeddingInput]) -> PipelineOutput:
        """Embeddings computed elsewhere (split deployment); poses taken from the items, else from odometry."""
        for it in items:
            self._check_time(it.stamp_ns)
        inputs = [(it if it.pose is not None else dataclasses.replace(it, pose=self.pose_at(it.stamp_ns)), (0.0, 0.0))
                  for it in items]
        first = items[0] if items else None
        return self._search_insert(inputs, first.stamp_ns if first else 0, first.frame_id if first else "", True)

    def _search_insert(self, inputs: list[tuple[EmbeddingInput, tuple[float, float]]], stamp_ns: int, frame_id: str,
                       complete: bool) -> PipelineOutput:
        found: list[tuple[list[MatchResult], float]] = []
        for it, _ in inputs:
            t0 = self._clock()
            q = Query(it.modality, it.topic, it.stamp_ns, it.frame_id, it.vector, it.pose, self.session,
                      views=it.views)
            found.append((self.policy.match(self.memory, q), (self._clock() - t0) * 1e3))
        events: list[MatchResult] = []
        paths: list[FramePath] = []
        for (it, (pre_ms, enc_ms)), (results, search_ms) in zip(inputs, found):
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
            paths.append(FramePath(it.modality, it.topic, it.stamp_ns, enc_ms, search_ms, entry_id, rejected,
                                   it.pose is not None, pre_ms))
        return PipelineOutput(stamp_ns, frame_id, tuple(events), tuple(paths), complete)

    def close(self) -> None:
        self.memory.close()


def frame_from(modality: Modality, topic: str, msg: Any, *, compressed: bool, radar_fields: RadarFields,
               stamp_ns: int, receive_ns: int = 0, limits: InputLimits = DEFAULT_LIMITS) -> Frame:
    """A :class:`Frame` from a sensor message (rclpy or rosbags), with the decoding time."""
    t0 = time.perf_counter()
    data = decode_sensor(modality, msg, compressed=compressed, radar_fields=radar_fields, limits=limits)
    return Frame(modality, topic, str(msg.header.frame_id), stamp_ns, data, receive_ns,
                 (time.perf_counter() - t0) * 1e3)
