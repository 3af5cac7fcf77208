"""How near the rig-aware inputs bring another rig's tensors to the default rig's at the same places.

Sessions of one seed drive the same poses whatever the rig (checked here: the largest distance between the two bags'
poses of paired messages is printed), so message k of a default-rig bag and message k of another rig's bag see the
same place. For every ``--every``-th message of a modality: the preprocessed tensors of both, the other rig's with
the rig step off and on; prints per channel the mean value and the mean |difference| to the default rig's, and the
fraction of non-empty cells (LiDAR: bird's-eye and front view apart).

    python tests/bench_rig_tensors.py town_999/session_00 town_999_rig_b/session_00 --modality lidar
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import numpy as np

from cmr_fusion_ros.bag.reader import read_samples
from cmr_fusion_ros.bag.rig_info import read_rig
from cmr_fusion_ros.core.preprocess import default_preprocessing
from cmr_fusion_ros.core.rig import RigAdapter, RigOptions
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.machine import machine_summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("default_bag")
    ap.add_argument("other_bag")
    ap.add_argument("--modality", default="lidar", choices=[m.value for m in Modality])
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--messages", type=int, default=30)
    ap.add_argument("--ground-fill", action="store_true", help="also with rig.ground_fill on")
    args = ap.parse_args()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"machine: {machine_summary()}, load {os.getloadavg()[0]:.1f}")
    mod = Modality(args.modality)
    pre = default_preprocessing(mod)

    def frames(path, adapter=None):
        out, poses = [], []
        for i, s in enumerate(read_samples(path, modalities=[mod])):
            if i % args.every:
                continue
            out.append(pre(adapter(s.data) if adapter else s.data))
            poses.append((s.pose.x, s.pose.y))
            if len(out) >= args.messages:
                break
        return np.stack(out), np.asarray(poses)

    ref, ref_pose = frames(args.default_bag)
    rig = read_rig(args.other_bag)
    parts = {"bird's-eye": slice(0, pre.input_shape[1]), "front view": slice(pre.input_shape[1], None)} \
        if mod is Modality.LIDAR else {"all": slice(None)}
    runs = [("recorded", None), ("canonical", RigAdapter(mod, rig, RigOptions()))]
    if args.ground_fill:
        runs.append(("canonical + ground_fill", RigAdapter(mod, rig, RigOptions(ground_fill=True))))
    for label, adapter in runs:
        t, pose = frames(args.other_bag, adapter)
        print(f"{label}: {len(t)} pairs, largest pose distance {np.abs(pose - ref_pose).max():.3f} m")
        for name, sl in parts.items():
            a, b = ref[..., sl], t[..., sl]
            print(f"  {name:<10} mean default {a.mean(axis=(0, 2, 3)).round(3)} other {b.mean(axis=(0, 2, 3)).round(3)}"
                  f"  |diff| {np.abs(a - b).mean(axis=(0, 2, 3)).round(3)}"
                  f"  non-empty default {(a[:, 0] != 0).mean():.3f} other {(b[:, 0] != 0).mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
