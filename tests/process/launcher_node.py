"""A stand-in node for the launcher process tests: behaves like the project's nodes at start and shutdown.

Run as ``python -m tests.process.launcher_node --ros-args -r __node:=NAME ...``. It prints one line
``READY name=<name> ns=<namespace> use_sim_time=<bool> modality=<value or ->``, publishes a heartbeat on
``~/heartbeat`` every 0.1 s, and on SIGINT "saves" (writes ``$LAUNCHER_TEST_DIR/<name>.saved``), prints SAVED and
exits 0, like a node saving its memory. Environment switches, each naming one node:
``LAUNCHER_TEST_CRASH=<name>``: that node exits with code 7 shortly after READY;
``LAUNCHER_TEST_STUBBORN=<name>``: that node ignores SIGINT and SIGTERM (only SIGKILL ends it).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from std_msgs.msg import String


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = Node("launcher_test_node", automatically_declare_parameters_from_overrides=True)
    name = node.get_name()
    if os.environ.get("LAUNCHER_TEST_STUBBORN") == name:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pub = node.create_publisher(String, "~/heartbeat", 10)
    beats = [0]

    def beat() -> None:
        beats[0] += 1
        pub.publish(String(data=f"{name} {beats[0]}"))

    node.create_timer(0.1, beat)
    modality = node.get_parameter("modality").value if node.has_parameter("modality") else "-"
    crash_at = time.monotonic() + 0.3 if os.environ.get("LAUNCHER_TEST_CRASH") == name else None
    try:  # from READY on, SIGINT leads to the shutdown below, however early it comes
        print(f"READY name={name} ns={node.get_namespace()} use_sim_time={node.get_parameter('use_sim_time').value}"
              f" modality={modality}", flush=True)
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.05)
            if crash_at is not None and time.monotonic() >= crash_at:
                print("CRASHING", flush=True)
                os._exit(7)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    out = Path(os.environ.get("LAUNCHER_TEST_DIR", "."))
    (out / f"{name}.saved").write_text(f"{beats[0]}\n")
    print("SAVED", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
