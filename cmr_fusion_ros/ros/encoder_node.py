"""``encoder_node``: one modality's stream -> ``cmr_fusion_msgs/Embedding`` on ``embeddings`` (split deployment).

Run one per modality (parameter ``modality``), e.g. on a GPU host (``encoders.providers``), and a ``memory_node``
elsewhere. The subscription queue is bounded and the newest message wins under overload; drops and bad messages are
counted in ``/diagnostics``. A multi-scan radar model (card ``scans > 1``) also makes the node follow
``odometry.topic``: each scan is merged with the earlier ones moved by the odometry, as in the fusion node. A LiDAR
node with ``encoders.lidar_views`` N > 1 also sends the scan seen at N - 1 other headings (``Embedding.views``), which
the memory node uses when its LiDAR queries search LiDAR entries (``policy.routes.lidar``).
"""

from __future__ import annotations

import collections
import threading
import time
import traceback

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, PointCloud2

from cmr_fusion_msgs.msg import Embedding
from cmr_fusion_ros.core.accumulate import OdometryScanMerger
from cmr_fusion_ros.core.encoder import (EncoderConfig, OnnxEncoder, model_path, provider_fallback_message,
                                         providers_in_use)
from cmr_fusion_ros.core.errors import CmrFusionError, ConfigError
from cmr_fusion_ros.core.decode import frame_from
from cmr_fusion_ros.core.embed import FrameEmbedder
from cmr_fusion_ros.core.poses import PoseBuffer
from cmr_fusion_ros.core.rig import RigAdapter
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import make_header, stamp_to_ns
from cmr_fusion_ros.ros.messages import diagnostics_message, ros_to_pose
from cmr_fusion_ros.ros.node_main import run_node
from cmr_fusion_ros.ros.params import declare_fusion_parameters
from cmr_fusion_ros.ros.stream_io import StreamStats, advertise, qos_for, subscribe

__all__ = ["EncoderNode", "main"]


class EncoderNode(Node):
    def __init__(self, node_name: str = "encoder_node", *, encoder=None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        raw = self.declare_parameter("modality", "lidar", ParameterDescriptor(
            description="camera | lidar | radar: the stream this node encodes", read_only=True)).value
        self.modality = Modality.parse(raw)
        self.output_topic = self.declare_parameter("output_topic", "embeddings", ParameterDescriptor(
            description="topic of the cmr_fusion_msgs/Embedding messages", read_only=True)).value
        self.config = declare_fusion_parameters(self, sections=("streams", "limits", "odometry", "encoders", "output",
                                                                "rig"), own=("modality", "output_topic"))
        sc = self.config.stream(self.modality)
        if not sc.enabled:
            raise ConfigError(f"streams.{self.modality.value}.enabled", False, "true for the node's own modality")
        if encoder is None:
            from cmr_fusion_ros.paths import models_dir

            enc = self.config.encoders
            encoder = OnnxEncoder(EncoderConfig(
                model_path=str(model_path(enc.models_dir or models_dir(), self.modality)), providers=enc.providers,
                intra_op_threads=enc.intra_op_threads, batch_size=enc.batch_size, warmup_runs=enc.warmup_runs),
                warn=False)
            if fallback := provider_fallback_message([encoder]):
                self.get_logger().warning(fallback)
        self.encoder = encoder
        # the runtime's route: this sensor's data brought to the rig the models were trained on (mounts / intrinsics
        # from rig.*), then merge -> views -> preprocess -> encode
        rig = self.config.rig
        adapter = RigAdapter(self.modality, rig.sensor_rig(), rig) if rig.enabled else None
        self.embedder = FrameEmbedder.of(encoder, adapter=adapter)
        self.merger: OdometryScanMerger | None = None
        accumulator = self.embedder.accumulator
        if accumulator is not None:  # a multi-scan radar model: earlier scans are moved by the odometry
            odo = self.config.odometry
            if not odo.topic:
                raise ConfigError("odometry.topic", odo.topic, f"an Odometry topic: the {self.modality.value} model "
                                  f"merges {accumulator.scans} scans moved by the odometry")
            self.merger = OdometryScanMerger(accumulator, PoseBuffer(
                max_gap_ns=round(odo.max_gap_s * 1e9), max_extrapolation_ns=round(odo.max_extrapolation_s * 1e9)))
            subscribe(self, Odometry, odo.topic, self._on_odom, qos_for("reliable", 100))
        # a LiDAR scan also at other headings, for a memory node whose LiDAR queries search LiDAR entries
        self.views = 1
        if (self.modality is Modality.LIDAR and self.config.encoders.lidar_views > 1
                and hasattr(encoder, "encode_tensors") and hasattr(encoder, "preprocessing")):
            self.views = self.config.encoders.lidar_views
        card = getattr(encoder, "card", None)
        self.model_id = f"{self.modality.value}:{(getattr(card, 'sha256', '') or 'unknown')[:12]}"
        self.providers = providers_in_use({self.modality: encoder})
        self.get_logger().info(f"{self.modality.value} encoder {self.model_id} on {self.providers or 'a stand-in'}")
        self.stats = StreamStats(window_s=self.config.output.diagnostics_window_s)
        self._queue: collections.deque = collections.deque(maxlen=sc.queue_size)
        self._cond = threading.Condition()
        self._running = True
        self.topic = self.resolve_topic_name(sc.topic)
        msg_type = (CompressedImage if sc.transport == "compressed" else Image) if self.modality is Modality.CAMERA else PointCloud2
        subscribe(self, msg_type, sc.topic, self._on_msg, qos_for(sc.reliability, sc.depth))
        self.pub = advertise(self, Embedding, self.output_topic, 50)
        self.pub_diag = advertise(self, DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.config.output.diagnostics_period_s, self._diagnostics)
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()

    def _on_odom(self, msg: Odometry) -> None:
        try:
            if self.merger.add_pose(stamp_to_ns(msg.header.stamp), ros_to_pose(msg.pose.pose)):
                self.get_logger().warning("odometry stamps went back in time: poses and scan history reset",
                                          throttle_duration_sec=2.0)
        except CmrFusionError as err:
            self.get_logger().warning(f"bad odometry message: {err}", throttle_duration_sec=2.0)

    def _on_msg(self, msg) -> None:
        self.stats.received += 1
        self.stats.arrivals.append(time.monotonic())
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.stats.dropped += 1
            self._queue.append((time.perf_counter(), msg))
            self._cond.notify()

    def _work(self) -> None:
        while self._running:
            with self._cond:
                if not self._queue:
                    self._cond.wait(0.05)
                if not self._queue:
                    continue
                received, msg = self._queue.popleft()
            self._encode(received, msg)

    def _encode(self, received: float, msg) -> None:
        sc = self.config.stream(self.modality)
        try:
            frame = frame_from(self.modality, self.topic, msg, compressed=sc.transport == "compressed",
                               radar_fields=sc.radar_fields, stamp_ns=stamp_to_ns(msg.header.stamp),
                               limits=self.config.limits, min_size=self.embedder.decode_size)
            if self.merger is not None:  # the merge moves earlier scans by the odometry of another thread
                with self.merger.lock:
                    out = self.embedder.embed(frame, self.merger.pose_for(frame.stamp_ns), self.views)
            else:
                out = self.embedder.embed(frame, None, self.views)
            vec, views = out.vector, out.views
        except CmrFusionError as err:
            self.stats.bad_messages += 1
            self.get_logger().warning(f"bad {self.modality.value} message: {err}", throttle_duration_sec=2.0)
            return
        except Exception:  # keep running; reported
            self.stats.bad_messages += 1
            self.get_logger().error(traceback.format_exc(), throttle_duration_sec=5.0)
            return
        out = Embedding(header=make_header(frame.stamp_ns, frame.frame_id), modality=self.modality.value,
                        source_topic=self.topic, model_id=self.model_id)
        out.vector = vec.astype("float32").tolist()
        if views is not None:
            out.views = views.astype("float32").reshape(-1).tolist()
        self.pub.publish(out)
        self.stats.processed += 1
        self.stats.latencies_ms.append((time.perf_counter() - received) * 1e3)

    def _diagnostics(self) -> None:
        self.pub_diag.publish(diagnostics_message(self.get_fully_qualified_name(), self.get_clock().now().nanoseconds,
                                                  {self.modality.value: self.stats.summary()}, self._values()))

    def _values(self) -> dict:
        values = {"model_id": self.model_id, "providers": self.providers}
        if self.modality is Modality.LIDAR:
            values["lidar_views"] = self.views  # headings each scan is embedded at (Embedding.views)
        if self.merger is not None:  # multi-scan model: earlier scans merged in / wanted but not found
            values.update(self.merger.accumulator.stats(), time_jumps=self.merger.time_jumps)
        return values

    def shutdown(self) -> None:
        self._running = False
        self._worker.join(timeout=5.0)


def _stop(node: EncoderNode) -> str:
    node.shutdown()
    return f"stopped: {node.stats.processed} {node.modality.value} frames encoded"


def main(args: list[str] | None = None) -> None:
    run_node("encoder_node", EncoderNode, _stop, args)


if __name__ == "__main__":
    main()
