"""The stream runner: sensor and odometry messages in, one pipeline output per frame out (no ROS).

One runner serves ``fusion_node`` (a worker thread per stream) and ``cmr-fusion process`` (one thread, the bag's
messages in log order), so both take the same steps for each message:

* odometry -> the pipeline's pose buffer (stamps going back by more than the jump threshold start a new time line);
* a sensor message -> :func:`~cmr_fusion_ros.core.decode.frame_from` (limits, finite points) -> when the odometry is
  running just behind the frame's stamp, a wait for the odometry message that interpolates it (at most
  ``odometry.max_extrapolation_s``; live on the clock, offline on the bag's log time) -> the frame's route
  (:meth:`FusionPipeline.embed`: time-jump check, pose, merge, views, preprocess, encode) -> search through the match
  policy and insert (:meth:`FusionPipeline.commit`). Each frame is processed alone the moment it is taken from its
  queue: no frame waits for another sensor.

**Concurrency.** Streams are embedded concurrently (one caller per stream); the search + insert step
(:meth:`FusionPipeline.commit`) is serialised by a lock. Offline the order is the bag's log
order. Live, DDS delivers the topics independently, so frames of different streams taken at about the same time may
be committed in either order: the events are the same as offline (a query never matches entries newer than
``policy.exclude_recent_s``, and each stream's debounce, sequences and near-duplicate admission look at that stream
alone), but the memory may number the entries in another order.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.decode import Frame, frame_from, header_stamp_ns
from cmr_fusion_ros.core.embed import decode_size
from cmr_fusion_ros.core.errors import CmrFusionError, ConversionError
from cmr_fusion_ros.core.pipeline import EmbeddingInput, FusionPipeline, PipelineOutput
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = ["Processed", "StreamRunner", "odometry_pose"]


def odometry_pose(msg: Any) -> tuple[int, Pose]:
    """(stamp ns, pose) of a ``nav_msgs/Odometry`` (rclpy or rosbags); :class:`ConversionError` when malformed."""
    try:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        return header_stamp_ns(msg), Pose(float(p.x), float(p.y), float(p.z), float(q.x), float(q.y), float(q.z),
                                          float(q.w))
    except (AttributeError, TypeError, ValueError) as err:
        raise ConversionError("nav_msgs/Odometry", "pose", f"{type(err).__name__}: {err}") from err


@dataclass(frozen=True, slots=True)
class Processed:
    frame: Frame
    output: PipelineOutput


class StreamRunner:
    """Runs messages through ``pipeline`` (see the module doc). Thread-safe with one caller per stream.

    ``topics`` maps each (resolved) sensor topic to its modality; stream settings (camera transport, radar fields)
    and the input limits come from ``config``.
    """

    def __init__(self, pipeline: FusionPipeline, config: FusionConfig, topics: Mapping[str, Modality]) -> None:
        self.pipeline = pipeline
        self.config = config
        self.topics = dict(topics)
        self._commit = threading.Lock()
        # a JPEG is decoded directly at a fraction of its size when that is still at least the camera encoder's input
        self._min_size = {m: decode_size(getattr(e, "preprocessing", None)) for m, e in pipeline.encoders.items()}

    def odometry(self, msg: Any) -> bool:
        """Feed one odometry message (its header frame names the events' poses); True when it started a new time
        line (the older poses were dropped)."""
        stamp, pose = odometry_pose(msg)
        return self.pipeline.add_pose(stamp, pose, str(getattr(msg.header, "frame_id", "") or ""))

    def accepts(self, topic: str, msgtype: str) -> bool:
        """Whether a message of ``msgtype`` (e.g. ``sensor_msgs/msg/CompressedImage``) on ``topic`` is one of the
        configured streams (a camera topic carries one transport)."""
        m = self.topics.get(topic)
        if m is None:
            return False
        if m is Modality.CAMERA:
            return msgtype.endswith("CompressedImage") == (self.config.stream(m).transport == "compressed")
        return msgtype.endswith("PointCloud2")

    def decode(self, topic: str, msg: Any, receive_ns: int = 0) -> Frame:
        """A frame from a sensor message of a configured topic; :class:`ConversionError` (a CmrFusionError) when the
        message is bad, whatever went wrong inside the decoder."""
        m = self.topics[topic]
        sc = self.config.stream(m)
        try:
            return frame_from(m, topic, msg, compressed=sc.transport == "compressed", radar_fields=sc.radar_fields,
                              receive_ns=receive_ns, limits=self.config.limits, min_size=self._min_size.get(m))
        except CmrFusionError:
            raise
        except Exception as err:  # a conversion gap: still the message's fault, never the runner's
            raise ConversionError(f"{m.value} message", "data", f"unexpected {type(err).__name__}: {err}") from err

    @property
    def pose_wait_ns(self) -> int:
        """How long a frame waits at most for the odometry to pass its stamp (``odometry.max_extrapolation_s``)."""
        return round(self.config.odometry.max_extrapolation_s * 1e9)

    def waits_for_pose(self, frame: Frame) -> bool:
        """Whether the odometry is running just behind ``frame`` (its interpolating pose is about to arrive)."""
        poses = self.pipeline.poses
        return poses is not None and poses.behind(frame.stamp_ns)

    def process(self, topic: str, msg: Any, *, receive_ns: int = 0) -> Processed:
        """decode -> wait for the pose (on the clock) -> embed -> search + insert (the live node). Raises
        :class:`CmrFusionError` for a bad message; other errors are the pipeline's."""
        frame = self.decode(topic, msg, receive_ns)
        if self.pipeline.poses is not None:
            self.pipeline.poses.wait_past(frame.stamp_ns, self.pose_wait_ns / 1e9)
        return self.process_frame(frame)

    def process_frame(self, frame: Frame) -> Processed:
        """embed -> search + insert."""
        return self.commit(frame, self.pipeline.embed(frame))

    def commit(self, frame: Frame, item: EmbeddingInput) -> Processed:
        """search + insert an embedded frame (offline processing embeds ahead in worker processes and commits here,
        in arrival order)."""
        with self._commit:
            return Processed(frame, self.pipeline.commit(item))

    def reset_time(self) -> None:
        """The clock jumped back: start a new time line now."""
        self.pipeline.reset_time()
