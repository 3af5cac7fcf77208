"""``fusion_node``: the all-in-one node (sensors in, match events out) for the lowest latency.

Callbacks only queue messages: each stream has a bounded queue where the newest message wins under overload (the
dropped ones are counted). One worker thread converts, time-aligns, encodes, searches and inserts, and publishes:

* ``~/matches``  cmr_fusion_msgs/MatchEventArray (one per frame set that produced events)
* ``~/markers``  visualization_msgs/MarkerArray (query -> match lines with scores)
* ``/diagnostics`` diagnostic_msgs/DiagnosticArray (per stream: rate, latency, drops, bad messages; memory size)
* services ``~/save_memory``, ``~/clear_memory``, ``~/query_memory``

A bad message is logged (throttled, naming the field and the reason), counted in the diagnostics, and the node
goes on. Messages claiming more than ``limits.*`` (pixels, points, bytes) are rejected before decoding, counted
the same way. Time going back (a bag that loops, ``/clock`` jumping back under ``use_sim_time``, sensor stamps going
back by more than ``sync.time_jump_s``, by default max(1 s, twice the sync window)) resets the sync buffers, the
policy's revisit/sequence state and the pose buffer instead of stalling or firing bogus events (counted as
``time_jumps`` in the diagnostics).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from cmr_fusion_msgs.msg import MatchEventArray
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.errors import CmrFusionError
from cmr_fusion_ros.core.pipeline import FusionPipeline, PipelineOutput, frame_from
from cmr_fusion_ros.core.sync import Synchronizer
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import stamp_to_ns
from cmr_fusion_ros.ros.messages import diagnostics_message, markers, match_event_array, ros_to_pose
from cmr_fusion_ros.ros.services import add_memory_services
from cmr_fusion_ros.ros.stream_io import RecentProblems, StreamStats, advertise, qos_for, subscribe
from cmr_fusion_ros.ros.node_main import run_node
from cmr_fusion_ros.ros.params import declare_fusion_parameters, on_policy_change

__all__ = ["FusionNode", "main"]


class FusionNode(Node):
    def __init__(self, node_name: str = "fusion_node", *, pipeline: FusionPipeline | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.config: FusionConfig = declare_fusion_parameters(self)
        self.pipeline = pipeline or FusionPipeline.from_config(self.config)
        self.sync = Synchronizer(self.config.enabled_modalities, round(self.config.sync.tolerance_s * 1e9),
                                 round(self.config.sync.timeout_s * 1e9), jump_back_ns=self.pipeline.jump_back_ns)
        window = self.config.output.diagnostics_window_s
        self.stats = {m: StreamStats(window_s=window) for m in self.config.enabled_modalities}
        self.events_published = 0
        self.problems = RecentProblems(window)
        self._seq = itertools.count()
        self._inbox: dict[Modality, collections.deque] = {
            m: collections.deque(maxlen=self.config.stream(m).queue_size) for m in self.config.enabled_modalities}
        self._cond = threading.Condition()
        self._running = True
        self._marker_ids = itertools.count(step=2)
        self._clock_jumped = False
        self._last_bad: dict[Modality, str] = {}

        self.pub_matches = advertise(self, MatchEventArray, "~/matches", 10)
        self.pub_markers = advertise(self, MarkerArray, "~/markers", 10) if self.config.output.markers else None
        self.pub_diag = advertise(self, DiagnosticArray, "/diagnostics", 10)
        for m in self.config.enabled_modalities:
            sc = self.config.stream(m)
            msg_type = (CompressedImage if sc.transport == "compressed" else Image) if m is Modality.CAMERA else PointCloud2
            subscribe(self, msg_type, sc.topic, self._enqueue_cb(m), qos_for(sc.reliability, sc.depth))
        if self.config.odometry.topic:
            subscribe(self, Odometry, self.config.odometry.topic, self._on_odom, qos_for("reliable", 100))
        elif multi := [m.value for m in self.pipeline.multi_scan_modalities() if m in self.config.enabled_modalities]:
            self.get_logger().warning(f"odometry.topic is empty but the {', '.join(multi)} model merges scans moved by "
                                      "the odometry: each scan is used alone (weaker matches)")
        add_memory_services(self, self.pipeline)
        self.add_on_set_parameters_callback(on_policy_change(self, lambda: self.config, self._apply_policy))
        self.create_timer(self.config.output.diagnostics_period_s, self._publish_diagnostics)
        # /clock jumping back (use_sim_time, a bag replayed with --loop --clock): reset what depends on time
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-self.pipeline.jump_back_ns),
                          on_clock_change=False),
            post_callback=self._on_clock_jump)
        self._worker = threading.Thread(target=self._work, name="fusion_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"streams {[m.value for m in self.config.enabled_modalities]}, memory {len(self.pipeline.memory)} entries "
            f"({self.config.memory.persistence.directory or 'RAM only'}), session {self.pipeline.session}")

    # --- callbacks: queue only ---------------------------------------------------------------------------------

    def _enqueue_cb(self, modality: Modality):
        topic = self.resolve_topic_name(self.config.stream(modality).topic)
        inbox, stats = self._inbox[modality], self.stats[modality]

        def callback(msg: Any) -> None:
            stats.received += 1
            stats.arrivals.append(time.monotonic())
            with self._cond:
                if len(inbox) == inbox.maxlen:
                    stats.dropped += 1  # latest wins: the oldest queued message is dropped
                inbox.append((next(self._seq), time.perf_counter(), topic, msg))
                self._cond.notify()

        return callback

    def _on_odom(self, msg: Odometry) -> None:
        if self.pipeline.poses is not None:
            try:
                if self.pipeline.add_pose(stamp_to_ns(msg.header.stamp), ros_to_pose(msg.pose.pose), msg.header.frame_id):
                    self.get_logger().warning("odometry stamps went back in time: pose buffer reset",
                                              throttle_duration_sec=2.0)
            except (CmrFusionError, ValueError, TypeError) as err:
                self.get_logger().warning(f"bad odometry message: {err}", throttle_duration_sec=2.0)

    def _on_clock_jump(self, jump) -> None:
        with self._cond:
            self._clock_jumped = True
            self._cond.notify()

    def _apply_policy(self, policy) -> None:
        self.pipeline.set_policy(policy)
        self.config = self.pipeline.config

    # --- the worker ----------------------------------------------------------------------------------------------

    def _next(self, timeout: float):
        with self._cond:
            if not any(self._inbox.values()):
                self._cond.wait(timeout)
            heads = [(q[0][0], m) for m, q in self._inbox.items() if q]
            if not heads:
                return None
            _, m = min(heads)
            return m, self._inbox[m].popleft()

    def _work(self) -> None:
        while self._running:
            try:
                if self._clock_jumped:
                    self._reset_time("the clock jumped back")
                item = self._next(0.05)
                sets = []
                if item is not None:
                    sets += self._sync_item(*item)
                sets += self.sync.poll(time.monotonic_ns())
                for fs in sets:
                    self._process(fs)
            except Exception as err:  # the worker must survive anything; errors are reported in diagnostics
                self._problem(f"worker error: {err!r}")
                self.get_logger().error(traceback.format_exc(), throttle_duration_sec=5.0)

    def _sync_item(self, modality: Modality, item: tuple) -> list:
        _, received, topic, msg = item
        sc = self.config.stream(modality)
        try:
            frame = frame_from(modality, topic, msg, compressed=sc.transport == "compressed",
                               radar_fields=sc.radar_fields, stamp_ns=stamp_to_ns(msg.header.stamp),
                               receive_ns=round(received * 1e9), limits=self.config.limits)
        except CmrFusionError as err:
            return self._bad(modality, topic, str(err))
        except Exception as err:  # a conversion gap: still the message's fault, never the node's
            return self._bad(modality, topic, f"unexpected {type(err).__name__}: {err}")
        if self.sync.is_jump(frame):
            self.get_logger().warning(f"{modality.value} stamps went back in time by "
                                      f"{(self.sync.newest(modality) - frame.stamp_ns) / 1e9:.3f} s: "
                                      f"sync buffers and match policy reset", throttle_duration_sec=2.0)
        return self.sync.push(frame, time.monotonic_ns())

    def _bad(self, modality: Modality, topic: str, reason: str) -> list:
        self.stats[modality].bad_messages += 1
        self._last_bad[modality] = reason
        self.get_logger().warning(f"bad {modality.value} message on {topic}: {reason}", throttle_duration_sec=2.0)
        return []

    def _reset_time(self, why: str) -> None:
        """New time line: process the open sets of the old one, then forget the sync and policy state."""
        with self._cond:
            self._clock_jumped = False
        for fs in self.sync.reset():
            self._process(fs)
        self.pipeline.reset_time()  # the pose buffer resets itself when the odometry stamps go back
        self.get_logger().warning(f"{why}: sync buffers and match policy reset",
                                  throttle_duration_sec=2.0)

    def _process(self, fs) -> PipelineOutput | None:
        try:
            out = self.pipeline.process_set(fs)
        except CmrFusionError as err:
            for m in fs.frames:
                self.stats[m].bad_messages += 1
            self.get_logger().warning(f"frame set at {fs.anchor_ns} ns not processed: {err}", throttle_duration_sec=2.0)
            return None
        except Exception as err:  # an encoder or index failure: the set is lost and counted, the node goes on
            for m in fs.frames:
                self.stats[m].bad_messages += 1
            self._problem(f"frame set at {fs.anchor_ns} ns failed: {type(err).__name__}: {err}")
            self.get_logger().error(traceback.format_exc(), throttle_duration_sec=5.0)
            return None
        t0 = time.perf_counter()
        self.publish(out)
        done = time.perf_counter()
        by_modality = {p.modality: p for p in out.frames}
        for m, fr in fs.frames.items():
            st = self.stats[m]
            st.processed += 1
            st.latencies_ms.append((done - fr.receive_ns / 1e9) * 1e3)
            path = by_modality.get(m)
            st.stages["decode"].append(fr.decode_ms)
            st.stages["publish"].append((done - t0) * 1e3)
            if path is not None:
                st.stages["preprocess"].append(path.preprocess_ms)
                st.stages["encode"].append(path.encode_ms)
                st.stages["search"].append(path.search_ms)
        return out

    def publish(self, out: PipelineOutput) -> None:
        if not out.events:
            return
        self.pub_matches.publish(match_event_array(out))
        self.events_published += len(out.events)
        if self.pub_markers is not None:
            arr = markers(out.events, self.config.output.marker_frame, out.stamp_ns, next(self._marker_ids) * 64)
            if arr.markers:
                self.pub_markers.publish(arr)

    def _problem(self, text: str) -> None:
        self.problems.add(text)

    def _publish_diagnostics(self) -> None:
        mem = self.pipeline.memory
        stats = mem.stats()
        memory_values = {"entries": len(mem), "events_published": self.events_published,
                         "suppressed_by_policy": self.pipeline.policy.suppressed,
                         "open_frame_sets": self.sync.open_sets, "time_jumps": self.pipeline.time_jumps,
                         "lidar_views": self.pipeline.lidar_views(),  # headings each LiDAR scan is embedded at now
                         "errors": self.problems.total}  # processing errors since start
        if self.pipeline.has_accumulation:  # multi-scan radar model: earlier scans merged / not found
            memory_values.update({f"radar_{k}": v for k, v in self.pipeline.accumulation_stats().items()})
        for key in ("added", "skipped_duplicate", "skipped_capacity", "evicted", "pending_records", "backend",
                    "torn_tail_bytes"):
            memory_values[key] = getattr(stats, key)
        self.pub_diag.publish(diagnostics_message(
            self.get_fully_qualified_name(), self.get_clock().now().nanoseconds,
            {m.value: {**s.summary(), "last_bad_reason": self._last_bad.get(m, "")} for m, s in self.stats.items()},
            memory_values, self.problems.recent()))

    # --- shutdown ------------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the worker, process what is queued and the open sets, then close (save) the memory."""
        self._running = False
        self._worker.join(timeout=10.0)
        while (item := self._next(0.0)) is not None:
            for fs in self._sync_item(*item):
                self._process(fs)
        for fs in self.sync.flush():
            self._process(fs)
        self.pipeline.close()


def _stop(node: FusionNode) -> str:
    node.shutdown()
    return f"stopped: {len(node.pipeline.memory)} entries in memory, {node.events_published} match events published"


def main(args: list[str] | None = None) -> None:
    run_node("fusion_node", FusionNode, _stop, args)


if __name__ == "__main__":
    main()
