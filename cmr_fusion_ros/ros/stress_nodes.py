"""The ROS 2 side of ``cmr-fusion stress``: ``fusion_node`` spun in the stress process (overload) and the
``/diagnostics`` listener of the soak.

The runs are in :mod:`cmr_fusion_ros.ros.stress_runs`, their reports in :mod:`cmr_fusion_ros.eval.stress` (no ROS). Each
class here has an rclpy context of its own, spun by a background thread from construction until ``close()``.
"""

from __future__ import annotations

import threading
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter

from cmr_fusion_ros.core.config import flatten

__all__ = ["DiagnosticsListener", "SpinningFusionNode", "parameter_overrides"]


def parameter_overrides(config) -> list[Parameter]:
    """Every value of a FusionConfig as a node parameter (tuples as lists; empty lists left out: no type to give)."""
    out = []
    for k, v in flatten(config.to_dict()).items():
        out.append(Parameter(k, value=list(v) if isinstance(v, tuple) else v))
    return [p for p in out if not (isinstance(p.value, list) and not p.value)]


class SpinningFusionNode:
    """``fusion_node`` over ``pipeline`` with the parameters of ``config``, spun by a ``num_threads`` executor.

    ``node`` is the :class:`~cmr_fusion_ros.ros.fusion_node.FusionNode` (its queues and stats are read while it
    runs); :meth:`close` stops the executor, shuts the node down and the context with it.
    """

    def __init__(self, pipeline, config, *, num_threads: int = 2) -> None:
        from cmr_fusion_ros.ros.fusion_node import FusionNode

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = FusionNode(pipeline=pipeline, context=self.context, parameter_overrides=parameter_overrides(config))
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


class DiagnosticsListener:
    """``/diagnostics`` of the launched graph into ``samples``: the latest key/values of each ``...: stream <m>``
    status under ``m``, of the ``...: memory`` status under ``"memory"`` (node ``stress_soak_listener``)."""

    def __init__(self, samples: dict[str, dict[str, Any]]) -> None:
        self.samples = samples
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("stress_soak_listener", context=self.context)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if ": stream " in st.name:
                values = {kv.key: kv.value for kv in st.values}
                self.samples[st.name.rsplit(" ", 1)[-1]] = values
            elif st.name.endswith(": memory"):
                self.samples["memory"] = {kv.key: kv.value for kv in st.values}

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
