"""The fusion pipeline: frame sets in, match results out (no ROS).

One implementation serves the all-in-one node, the split memory node (embeddings in) and offline processing of a
bag, so live and offline runs give the same events for the same message order.

Per frame set: each frame is preprocessed and encoded by its modality's encoder, its pose looked up, the memory is
searched through the match policy (routes, threshold, temporal exclusion, debounce, sequences), and only then are
the set's embeddings inserted, so a query never finds itself or its sibling frames of the same instant.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.image import convert_color, decode_compressed, decode_image
from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.pointcloud import decode_cloud
from cmr_fusion_ros.core.preprocess import batch as preprocess_batch
from cmr_fusion_ros.core.policy import MatchPolicy, MatchResult, Query
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.radar import RadarFields, radar_array
from cmr_fusion_ros.core.sync import Frame, FrameSet
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = [
    "EmbeddingInput",
    "FramePath",
    "FusionPipeline",
    "PipelineOutput",
    "decode_sensor",
    "frame_from",
    "IMAGE_TYPES",
]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
_COLOUR = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}


def decode_sensor(modality: Modality, msg: Any, *, compressed: bool, radar_fields: RadarFields = RadarFields()) -> np.ndarray:
    """Decode a sensor message (rclpy or rosbags object) into what the encoder of ``modality`` takes.

    camera: ``H x W x 3`` uint8 RGB; lidar: structured cloud, NaN points dropped; radar: x, y, z, doppler, rcs.
    """
    if modality is Modality.CAMERA:
        if compressed:
            return decode_compressed(msg, "rgb8")
        img = decode_image(msg)
        enc = str(msg.encoding)
        if enc not in _COLOUR:
            raise ConversionError("sensor_msgs/Image", "encoding", f"camera encoders take colour images, got {enc!r}")
        return convert_color(img, enc, "rgb8")
    cloud = decode_cloud(msg, skip_nans=True)
    if modality is Modality.RADAR:
        return radar_array(cloud, radar_fields)
    return cloud


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

    def pose_at(self, stamp_ns: int) -> Pose | None:
        return self.poses.lookup(stamp_ns) if self.poses is not None else None

    # --- the two entry points ---------------------------------------------------------------------------------

    def process_set(self, frame_set: FrameSet) -> PipelineOutput:
        """Encode every frame of a synchronised set, then search and insert them."""
        frames = [frame_set.frames[m] for m in Modality if m in frame_set.frames]
        inputs: list[tuple[EmbeddingInput, tuple[float, float]]] = []
        for fr in frames:
            encoder = self.encoders.get(fr.modality)
            if encoder is None:
                raise ConfigError(f"streams.{fr.modality.value}.enabled", True, "a loaded encoder for this modality")
            t0 = self._clock()
            if hasattr(encoder, "encode_tensors") and hasattr(encoder, "preprocessing"):
                tensor = preprocess_batch(encoder.preprocessing, [fr.data])  # timed apart from the network
                t1 = self._clock()
                vec = encoder.encode_tensors(tensor)[0]
            else:
                t1 = t0
                vec = encoder.encode([fr.data])[0]
            t2 = self._clock()
            inputs.append((EmbeddingInput(fr.modality, fr.topic, fr.frame_id, fr.stamp_ns, vec,
                                          self.pose_at(fr.stamp_ns)), ((t1 - t0) * 1e3, (t2 - t1) * 1e3)))
        anchor = frames[0] if frames else None
        return self._search_insert(inputs, frame_set.anchor_ns, anchor.frame_id if anchor else "", frame_set.complete)

    def process_embeddings(self, items: Sequence[EmbeddingInput]) -> PipelineOutput:
        """Embeddings computed elsewhere (split deployment); poses taken from the items, else from odometry."""
        inputs = [(it if it.pose is not None else dataclasses.replace(it, pose=self.pose_at(it.stamp_ns)), (0.0, 0.0))
                  for it in items]
        first = items[0] if items else None
        return self._search_insert(inputs, first.stamp_ns if first else 0, first.frame_id if first else "", True)

    def _search_insert(self, inputs: list[tuple[EmbeddingInput, tuple[float, float]]], stamp_ns: int, frame_id: str,
                       complete: bool) -> PipelineOutput:
        found: list[tuple[list[MatchResult], float]] = []
        for it, _ in inputs:
            t0 = self._clock()
            q = Query(it.modality, it.topic, it.stamp_ns, it.frame_id, it.vector, it.pose, self.session)
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
               stamp_ns: int, receive_ns: int = 0) -> Frame:
    """A :class:`Frame` from a sensor message (rclpy or rosbags), with the decoding time."""
    t0 = time.perf_counter()
    data = decode_sensor(modality, msg, compressed=compressed, radar_fields=radar_fields)
    return Frame(modality, topic, str(msg.header.frame_id), stamp_ns, data, receive_ns,
                 (time.perf_counter() - t0) * 1e3)
