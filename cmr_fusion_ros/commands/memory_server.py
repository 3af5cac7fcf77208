"""`cmr-fusion memory-server --data DIR [--port P]`: the embedded PostgreSQL + pgvector server, in the foreground."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

HELP = ("run an embedded PostgreSQL + pgvector server for memory.store: postgres (Unix socket in DIR; --port adds "
        "loopback TCP with passwords); prints `uri: postgresql://...` when ready, stops cleanly on SIGINT/SIGTERM")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="data folder (created and initialised when new)")
    parser.add_argument("--port", type=int, default=None,
                        help="also listen on 127.0.0.1/::1 at this port (password login only; default: socket only)")
    parser.add_argument("--shared-buffers", default=None, metavar="SIZE",
                        help="PostgreSQL's buffer cache, e.g. 4GB (kB, MB, GB, TB): kept in the data folder and "
                             "applied by a restart when it differs; size it to hold the HNSW indexes (default: "
                             "the data folder's setting, 128MB when new)")


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.core.memory.embedded import start_server

    from cmr_fusion_ros.core.signals import install_signal_watcher

    # set from a watcher thread, not in the handler (core/signals.py: a hang was seen once with SIGINT sent to
    # `timeout` and to this process, two SIGINTs, when the handler called Event.set)
    stopping = threading.Event()
    install_signal_watcher(lambda _signum: stopping.set(), name="memory-server-signals")
    server = start_server(args.data, args.port, args.shared_buffers)
    print(f"uri: {server.uri}", flush=True)
    if server.tcp_uri:
        print(f"tcp: {server.tcp_uri}  (loopback only; roles log in with a password)", flush=True)
    while not stopping.wait(0.5):
        if not server.alive():
            print(f"cmr-fusion memory-server: PostgreSQL (pid {server.pid}) exited; see {server.data / 'log'}",
                  file=sys.stderr, flush=True)
            return 1
    server.stop()
    print("stopped", flush=True)
    return 0
