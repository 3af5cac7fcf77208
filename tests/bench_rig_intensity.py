"""LiDAR intensity on another scale, with and without the rig-aware rescaling (core/rig.py, ``rig.intensity``).

Both bags' LiDAR intensities are multiplied by ``--scale`` as they are read (1/255: a sensor reporting 0..1, like the
DGP scenes), then embedded with ``rig.intensity`` keep / auto / drop and evaluated like ``cmr-fusion eval``. Prints
the command, the machine and the load, then one table per mode.

    python tests/bench_rig_intensity.py --database town_999/session_00 --queries town_999/session_01 --scale 0.00392
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import cmr_fusion_ros.eval.evaluate as evaluate_module
from cmr_fusion_ros.bag.reader import read_samples
from cmr_fusion_ros.core.encoder import load_encoders
from cmr_fusion_ros.core.rig import RigOptions
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.evaluate import embed_bag, evaluate, format_table
from cmr_fusion_ros.machine import machine_summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", type=Path, required=True)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--scale", type=float, default=1 / 255)
    ap.add_argument("--modes", default="keep,auto,drop")
    ap.add_argument("--max-yaw-diff", type=float, default=30.0)
    args = ap.parse_args()

    def scaled(*a, **kw):
        for s in read_samples(*a, **kw):
            if s.modality is Modality.LIDAR and "intensity" in (s.data.dtype.names or ()):
                data = s.data.copy()
                data["intensity"] *= args.scale
                s = replace(s, data=data)
            yield s

    evaluate_module.read_samples = scaled  # the bags as a sensor on another intensity scale would give them
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"machine: {machine_summary()}")
    encoders = load_encoders(None, (Modality.CAMERA, Modality.LIDAR))
    for mode in args.modes.split(","):
        rig = RigOptions(intensity=mode)
        db = embed_bag(args.database, encoders, rig=rig)
        q = embed_bag(args.queries, encoders, rig=rig)
        report = evaluate(db, q, 10.0, max_yaw_deg=args.max_yaw_diff)
        print(f"\nintensity x {args.scale:g}, rig.intensity {mode}, load {os.getloadavg()[0]:.1f}")
        print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
