"""Crash-stress child for the tests: the real offline pipeline and persistent memory, with fast stand-in encoders
(no trained models needed). ``--lie`` makes it claim entries durable before they are flushed, which the stress
must catch as lost entries.

Usage: python stress_crash_child.py BAG --params P --memory DIR [--flush-interval S] [--lie]
"""

from __future__ import annotations

import argparse
import sys
import zlib

import numpy as np

from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.stress import run_child, stress_config


class HashEncoder:
    """A unit vector derived from a checksum of the decoded data: deterministic and cheap."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, items):
        out = []
        for data in items:
            seed = zlib.crc32(np.ascontiguousarray(data).view(np.uint8).reshape(-1)[:4096].tobytes())
            v = np.random.default_rng(seed).standard_normal(self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("bag")
    p.add_argument("--params", required=True)
    p.add_argument("--memory", required=True)
    p.add_argument("--flush-interval", type=float, default=0.05)
    p.add_argument("--lie", action="store_true")
    args = p.parse_args()
    config = stress_config(args.params, memory_dir=args.memory, flush_interval_s=args.flush_interval,
                           snapshot_every_n=300)
    encoders = {m: HashEncoder(config.memory.dim) for m in Modality}
    emit = lambda s: print(s, flush=True)  # noqa: E731
    if args.lie:
        def emit(s):
            if s.startswith("LOADED"):
                print(s, flush=True)
                print(f"DURABLE {int(s.split()[2]) + 1_000_000}", flush=True)  # a claim nothing can back
    return run_child([args.bag], config, encoders=encoders, emit=emit)


if __name__ == "__main__":
    sys.exit(main())
