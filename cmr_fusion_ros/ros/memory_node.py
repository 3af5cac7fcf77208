"""``memory_node``: ``cmr_fusion_msgs/Embedding`` in, match events out (split deployment).

Holds the scene memory and the match policy; poses come from the embeddings when they carry one, else from the
odometry topic. Publishes ``~/matches``, ``~/markers``, ``/diagnostics`` and offers the memory services, like
``fusion_node``.
"""

from __future__ import annotations

import itertools
import time
import traceback

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from visualization_msgs.msg import MarkerArray

from cmr_fusion_msgs.msg import Embedding, MatchEventArray
from cmr_fusion_ros.core.errors import CmrFusionError
from cmr_fusion_ros.core.pipeline import EmbeddingInput, FusionPipeline, embedding_views
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import stamp_to_ns
from cmr_fusion_ros.ros.messages import diagnostics_message, publish_events, ros_to_pose, store_values
from cmr_fusion_ros.ros.node_main import run_node
from cmr_fusion_ros.ros.params import declare_fusion_parameters, on_policy_change
from cmr_fusion_ros.ros.services import add_memory_services
from cmr_fusion_ros.ros.stream_io import StreamStats, advertise, qos_for, subscribe

__all__ = ["MemoryNode", "main"]


class MemoryNode(Node):
    def __init__(self, node_name: str = "memory_node", *, pipeline: FusionPipeline | None = None, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.input_topic = self.declare_parameter("input_topic", "embeddings", ParameterDescriptor(
            description="topic of the cmr_fusion_msgs/Embedding messages", read_only=True)).value
        self.config = declare_fusion_parameters(self, own=("input_topic",))
        self.pipeline = pipeline or FusionPipeline.from_config(self.config, load_encoders=False,
                                                               namespace=self.get_namespace())
        self.stats = {m: StreamStats(window_s=self.config.output.diagnostics_window_s) for m in Modality}
        self.events_published = 0
        self._marker_ids = itertools.count(step=2)
        self.pub_matches = advertise(self, MatchEventArray, "~/matches", 10)
        self.pub_markers = advertise(self, MarkerArray, "~/markers", 10) if self.config.output.markers else None
        self.pub_diag = advertise(self, DiagnosticArray, "/diagnostics", 10)
        subscribe(self, Embedding, self.input_topic, self._on_embedding, qos_for("reliable", 100))
        if self.config.odometry.topic:
            subscribe(self, Odometry, self.config.odometry.topic, self._on_odom, qos_for("reliable", 100))
        add_memory_services(self, self.pipeline)
        self.add_on_set_parameters_callback(on_policy_change(self, lambda: self.config, self._apply_policy))
        self.create_timer(self.config.output.diagnostics_period_s, self._diagnostics)

    def _apply_policy(self, policy) -> None:
        self.pipeline.set_policy(policy)
        self.config = self.pipeline.config

    def _on_odom(self, msg: Odometry) -> None:
        if self.pipeline.poses is not None:
            try:
                self.pipeline.add_pose(stamp_to_ns(msg.header.stamp), ros_to_pose(msg.pose.pose), msg.header.frame_id)
            except (CmrFusionError, ValueError, TypeError) as err:
                self.get_logger().warning(f"bad odometry message: {err}", throttle_duration_sec=2.0)

    def _on_embedding(self, msg: Embedding) -> None:
        t0 = time.perf_counter()
        try:
            modality = Modality.parse(msg.modality)
        except CmrFusionError as err:
            self.get_logger().warning(f"bad Embedding.modality: {err}", throttle_duration_sec=2.0)
            return
        st = self.stats[modality]
        st.received += 1
        st.arrivals.append(time.monotonic())
        try:
            vector = np.asarray(msg.vector, np.float32)
            item = EmbeddingInput(modality, msg.source_topic, msg.header.frame_id, stamp_to_ns(msg.header.stamp),
                                  vector, ros_to_pose(msg.pose) if msg.pose_valid else None, msg.model_id,
                                  views=embedding_views(msg.views, vector.size))
            out = self.pipeline.process_embeddings([item])
        except CmrFusionError as err:
            st.bad_messages += 1
            self.get_logger().warning(f"embedding not processed: {err}", throttle_duration_sec=2.0)
            return
        except Exception:
            st.bad_messages += 1
            self.get_logger().error(traceback.format_exc(), throttle_duration_sec=5.0)
            return
        if out.events:
            self.events_published += publish_events(out, self.pub_matches, self.pub_markers,
                                                    self.config.output.marker_frame, next(self._marker_ids) * 64,
                                                    own_robot=self.pipeline.memory.robot)
        st.processed += 1
        st.latencies_ms.append((time.perf_counter() - t0) * 1e3)

    def _diagnostics(self) -> None:
        self.pub_diag.publish(diagnostics_message(
            self.get_fully_qualified_name(), self.get_clock().now().nanoseconds,
            {m.value: s.summary() for m, s in self.stats.items() if s.received},
            {"entries": len(self.pipeline.memory), "events_published": self.events_published,
             "time_jumps": self.pipeline.time_jumps, **store_values(self, self.pipeline.memory)}))


def _stop(node: MemoryNode) -> str:
    node.pipeline.close()
    return f"stopped: {len(node.pipeline.memory)} entries, {node.events_published} events"


def main(args: list[str] | None = None) -> None:
    run_node("memory_node", MemoryNode, _stop, args)


if __name__ == "__main__":
    main()
