"""``fusion_node``: the all-in-one node (sensors in, match events out) for the lowest latency.

Callbacks only queue messages: each stream has a bounded queue where the newest message wins under overload (the
dropped ones are counted). Each stream has its own worker thread, which takes a frame the moment it is queued and
runs it through the stream runner (:class:`cmr_fusion_ros.core.stream.StreamRunner`, shared with ``cmr-fusion
process``): decode, embed, search and insert, then publish. No frame waits for another sensor, and a LiDAR scan
being encoded does not hold up the camera frame behind it (onnxruntime, OpenCV and the index release the GIL; only
the short search + insert step takes turns), so the events equal offline processing of the same messages:

* ``~/matches``  cmr_fusion_msgs/MatchEventArray (one per frame that produced events)
* ``~/markers``  visualization_msgs/MarkerArray (query -> match lines with scores)
* ``/diagnostics`` diagnostic_msgs/DiagnosticArray (per stream: rate, latency, drops, bad messages; memory size)
* services ``~/save_memory``, ``~/clear_memory``, ``~/query_memory``

A bad message is logged (throttled, naming the field and the reason), counted in the diagnostics, and the node
goes on. Messages claiming more than ``limits.*`` (pixels, points, bytes) are rejected before decoding, counted
the same way. Time going back (a bag that loops, ``/clock`` jumping back under ``use_sim_time``, sensor stamps going
back by more than ``sync.time_jump_s``, by default 1 s) resets the policy's revisit/sequence state, the multi-scan
history and the pose buffer instead of stalling or firing bogus events (counted as ``time_jumps`` in the
diagnostics).
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
from cmr_fusion_ros.core.domain import monitor_for
from cmr_fusion_ros.core.encoder import provider_fallback_message, providers_in_use
from cmr_fusion_ros.core.errors import CmrFusionError
from cmr_fusion_ros.core.pipeline import FusionPipeline, PipelineOutput
from cmr_fusion_ros.core.stream import Processed, StreamRunner
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.messages import diagnostics_message, publish_events, store_values
from cmr_fusion_ros.ros.services import add_memory_services
from cmr_fusion_ros.ros.stream_io import RecentProblems, StreamStats, advertise, qos_for, subscribe
from cmr_fusion_ros.ros.node_main import run_node
from cmr_fusion_ros.ros.params import declare_fusion_parameters, on_policy_change

__all__ = ["FusionNode", "main"]


class _Stream:
    """One stream's bounded queue (latest wins) and its worker."""

    def __init__(self, modality: Modality, topic: str, queue_size: int) -> None:
        self.modality = modality
        self.topic = topic
        self.queue: collections.deque = collections.deque()
        self.queue_size = queue_size
        self.cond = threading.Condition()
        self.worker: threading.Thread | None = None


class FusionNode(Node):
    def __init__(self, node_name: str = "fusion_node", *, pipeline: FusionPipeline | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.config: FusionConfig = declare_fusion_parameters(self)
        self.pipeline = pipeline or FusionPipeline.from_config(self.config, namespace=self.get_namespace())
        self.streams = {m: _Stream(m, self.resolve_topic_name(self.config.stream(m).topic),
                                   self.config.stream(m).queue_size) for m in self.config.enabled_modalities}
        self.runner = StreamRunner(self.pipeline, self.config, {s.topic: m for m, s in self.streams.items()})
        window = self.config.output.diagnostics_window_s
        self.stats = {m: StreamStats(window_s=window) for m in self.config.enabled_modalities}
        self.events_published = 0
        self.problems = RecentProblems(window)
        self._running = True
        self._seq = itertools.count()  # arrival order (shutdown processes what is left in it)
        self._marker_ids = itertools.count(step=2)
        self._publish_lock = threading.Lock()  # publishers and counters shared by the stream workers
        self._last_bad: dict[Modality, str] = {}
        self.domain = monitor_for(self.pipeline.encoders)  # warns once when the first frames look out of domain

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
        for st in self.streams.values():
            st.worker = threading.Thread(target=self._work, args=(st,), name=f"fusion_{st.modality.value}", daemon=True)
            st.worker.start()
        self.providers = providers_in_use(self.pipeline.encoders)  # the execution providers that started
        self.get_logger().info(
            f"streams {[m.value for m in self.config.enabled_modalities]}, memory {len(self.pipeline.memory)} entries "
            f"({self._memory_where()}), session {self.pipeline.session}, robot {self.pipeline.memory.robot}, "
            f"encoders on {self.providers or 'stand-in encoders'}")
        if fallback := provider_fallback_message([e for e in self.pipeline.encoders.values()
                                                  if getattr(e, "fallback", None)]):
            self.get_logger().warning(fallback)

    def _memory_where(self) -> str:
        m = self.config.memory
        if m.store == "postgres":
            from cmr_fusion_ros.core.memory.postgres import redact_uri

            return f"database {redact_uri(m.postgres.uri)}"
        return m.persistence.directory or "RAM only"

    # --- callbacks: queue only ---------------------------------------------------------------------------------

    def _enqueue_cb(self, modality: Modality):
        st, stats = self.streams[modality], self.stats[modality]

        def callback(msg: Any) -> None:
            stats.received += 1
            stats.arrivals.append(time.monotonic())
            with st.cond:
                if len(st.queue) >= st.queue_size:
                    stats.dropped += 1  # latest wins: the oldest queued message is dropped
                    st.queue.popleft()
                st.queue.append((next(self._seq), time.perf_counter(), msg))
                st.cond.notify()

        return callback

    def _on_odom(self, msg: Odometry) -> None:
        if self.pipeline.poses is not None:
            try:
                if self.runner.odometry(msg):  # the header's frame names the events' poses
                    self.get_logger().warning("odometry stamps went back in time: pose buffer reset",
                                              throttle_duration_sec=2.0)
            except (CmrFusionError, ValueError, TypeError) as err:
                self.get_logger().warning(f"bad odometry message: {err}", throttle_duration_sec=2.0)

    def _on_clock_jump(self, jump) -> None:
        self.runner.reset_time()
        self.get_logger().warning("the clock jumped back: match policy and multi-scan history reset",
                                  throttle_duration_sec=2.0)

    def _apply_policy(self, policy) -> None:
        self.pipeline.set_policy(policy)
        self.config = self.pipeline.config

    # --- the workers, one per stream ---------------------------------------------------------------------------

    @staticmethod
    def _take(st: _Stream, timeout: float):
        with st.cond:
            if not st.queue:
                st.cond.wait(timeout)
            return st.queue.popleft() if st.queue else None

    def _work(self, st: _Stream) -> None:
        while self._running:
            item = self._take(st, 0.05)
            if item is not None:
                self._run(st, *item)

    def _run(self, st: _Stream, seq: int, received: float, msg: Any) -> Processed | None:
        """One message through the runner, then publish; never raises (errors are counted and reported)."""
        m = st.modality
        jumps = self.pipeline.time_jumps
        try:
            done = self.runner.process(st.topic, msg, receive_ns=round(received * 1e9))
        except CmrFusionError as err:
            self.stats[m].bad_messages += 1
            self._last_bad[m] = str(err)
            self.get_logger().warning(f"bad {m.value} message on {st.topic}: {err}", throttle_duration_sec=2.0)
            return None
        except Exception as err:  # an encoder or index failure: the frame is lost and counted, the node goes on
            self.stats[m].bad_messages += 1
            self._problem(f"{m.value} frame failed: {type(err).__name__}: {err}")
            self.get_logger().error(traceback.format_exc(), throttle_duration_sec=5.0)
            return None
        if self.pipeline.time_jumps != jumps:
            self.get_logger().warning(f"{m.value} stamps went back in time: match policy and multi-scan history "
                                      "reset", throttle_duration_sec=2.0)
        if (note := self.domain.observe(m, done.frame.data, reduction=done.frame.reduction)) is not None:
            self.get_logger().warning(note)  # once per modality, after its first frames
        t0 = time.perf_counter()
        self.publish(done.output)
        finished = time.perf_counter()
        st_ = self.stats[m]
        st_.processed += 1
        st_.latencies_ms.append((finished - received) * 1e3)
        st_.stages["decode"].append(done.frame.decode_ms)
        st_.stages["publish"].append((finished - t0) * 1e3)
        for path in done.output.frames:
            st_.stages["preprocess"].append(path.preprocess_ms)
            st_.stages["encode"].append(path.encode_ms)
            st_.stages["search"].append(path.search_ms)
        return done

    def publish(self, out: PipelineOutput) -> None:
        if not out.events:
            return
        with self._publish_lock:
            self.events_published += publish_events(out, self.pub_matches, self.pub_markers,
                                                    self.config.output.marker_frame, next(self._marker_ids) * 64,
                                                    own_robot=self.pipeline.memory.robot)

    def _problem(self, text: str) -> None:
        self.problems.add(text)

    def _publish_diagnostics(self) -> None:
        mem = self.pipeline.memory
        stats = mem.stats()
        memory_values = {"entries": len(mem), "events_published": self.events_published,
                         "suppressed_by_policy": self.pipeline.policy.suppressed,
                         "time_jumps": self.pipeline.time_jumps,
                         "lidar_views": self.pipeline.lidar_views(),  # headings each LiDAR scan is embedded at now
                         "providers": self.providers,  # execution providers each encoder runs on
                         "errors": self.problems.total}  # processing errors since start
        if self.pipeline.has_accumulation:  # multi-scan radar model: earlier scans merged / not found
            memory_values.update({f"radar_{k}": v for k, v in self.pipeline.accumulation_stats().items()})
        for key in ("added", "skipped_duplicate", "skipped_capacity", "evicted", "pending_records", "backend",
                    "torn_tail_bytes"):
            memory_values[key] = getattr(stats, key)
        memory_values.update(store_values(self, mem))
        self.pub_diag.publish(diagnostics_message(
            self.get_fully_qualified_name(), self.get_clock().now().nanoseconds,
            {m.value: {**s.summary(), "last_bad_reason": self._last_bad.get(m, "")} for m, s in self.stats.items()},
            memory_values, self.problems.recent()))

    # --- shutdown ------------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the workers, process what is queued (in arrival order), then close (save) the memory."""
        self._running = False
        for st in self.streams.values():
            if st.worker is not None:
                st.worker.join(timeout=10.0)
        left = []
        for st in self.streams.values():
            with st.cond:
                left += [(item, st) for item in st.queue]
                st.queue.clear()
        for item, st in sorted(left, key=lambda t: t[0][0]):
            self._run(st, *item)
        self.pipeline.close()


def _stop(node: FusionNode) -> str:
    node.shutdown()
    return f"stopped: {len(node.pipeline.memory)} entries in memory, {node.events_published} match events published"


def main(args: list[str] | None = None) -> None:
    run_node("fusion_node", FusionNode, _stop, args)


if __name__ == "__main__":
    main()
