"""Cost of the rig-aware step (core/rig.py) per message, beside the preprocessing it feeds, on the first N messages
of each modality of a bag; prints the command, the machine and the load.

    python tests/bench_rig_cost.py town_999_rig_b/session_00 --messages 50
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time

import numpy as np

from cmr_fusion_ros.bag.reader import read_samples
from cmr_fusion_ros.bag.rig_info import read_rig
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.preprocess import default_preprocessing
from cmr_fusion_ros.core.rig import RigOptions, intensity_p90, rig_adapters
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.machine import machine_summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bag")
    ap.add_argument("--messages", type=int, default=50)
    args = ap.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"machine: {machine_summary()}")
    adapters = rig_adapters(read_rig(args.bag), tuple(Modality), RigOptions())
    for m in Modality:
        pre = default_preprocessing(m)
        rig_ms, pre_ms, sizes, lidar_in_out = [], [], [], None
        try:
            samples = list(zip(range(args.messages), read_samples(args.bag, modalities=[m])))
        except BagError as err:
            print(f"{m.value:<7} skipped: {err}")
            continue
        for i, s in samples:
            t0 = time.perf_counter()
            data = adapters[m](s.data)
            t1 = time.perf_counter()
            pre(data)
            t2 = time.perf_counter()
            if i > 0 or len(samples) == 1:  # the first message builds the camera maps / estimates the LiDAR layout
                rig_ms.append((t1 - t0) * 1e3)
                pre_ms.append((t2 - t1) * 1e3)
            sizes.append((len(s.data) if m is not Modality.CAMERA else s.data.shape[1], len(data) if m is not
                          Modality.CAMERA else data.shape[1]))
            if m is Modality.LIDAR:  # what the steps did to the scale of intensity and the height of the ground
                lidar_in_out = [(intensity_p90(c), float(np.percentile(c["z"], 5))) for c in (s.data, data)]
        print(f"{m.value:<7} rig {statistics.median(rig_ms):7.2f} ms  preprocessing {statistics.median(pre_ms):6.2f} ms"
              f"  (median of {len(rig_ms)}; size in -> out {sizes[-1][0]} -> {sizes[-1][1]}; "
              f"load {os.getloadavg()[0]:.1f})")
        if lidar_in_out:
            (i0, z0), (i1, z1) = lidar_in_out
            print(f"        last scan: intensity 90th percentile {i0} -> {i1}, height 5th percentile (ground) "
                  f"{z0:.2f} -> {z1:.2f} m")
    return 0


if __name__ == "__main__":
    sys.exit(main())
