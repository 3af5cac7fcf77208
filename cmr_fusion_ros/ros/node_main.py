"""The ``main()`` every node shares: init, spin, clean exit on Ctrl-C / SIGTERM / shutdown, and a one-line error with
exit code 2 when the node cannot start (bad parameter, missing model, foreign memory folder).

A node changes nothing in the middleware environment (``ROS_AUTOMATIC_DISCOVERY_RANGE``, ``RMW_IMPLEMENTATION``,
``FASTDDS_DEFAULT_PROFILES_FILE``): under ``ros2 run`` / ``ros2 launch`` the user's settings apply. The project's own
launcher, demo, benches and tests set their defaults for the processes they start (``cmr_fusion_ros.rosenv``)."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from cmr_fusion_ros.core.errors import CmrFusionError

__all__ = ["run_node"]


def run_node(name: str, make: Callable[[], Node], stop: Callable[[Node], str | None] | None = None,
             args: list[str] | None = None) -> None:
    """Run the node built by ``make`` until shutdown; ``stop(node)`` releases it (saves the memory) and may return a
    closing line, printed (the ROS context is already shut down then, so the logger could not publish it)."""
    rclpy.init(args=args)
    node = None
    try:
        node = make()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except CmrFusionError as err:
        if node is None:  # could not start: say what, exit non-zero, no traceback
            print(f"{name}: error: {err}", flush=True)
            raise SystemExit(2) from None
        raise
    finally:
        if node is not None:
            line = stop(node) if stop is not None else None
            if line:
                print(line, flush=True)
            node.destroy_node()
        rclpy.try_shutdown()
