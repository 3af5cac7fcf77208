#!/usr/bin/env python3
"""Recall@1 pooled over several `cmr-fusion eval --json` files (one per town or sequence).

    scripts/pool_recall.py res/stage7_town_*.json [--label stage7]

For each query -> database pair: the hits of every file (recall@1 x counted queries) over all counted queries, so a
town with more queries weighs more (averaging per-town recalls would not); and the mean of the six cross-modal pairs.
It refuses files measured with other radii or heading limits than the first one. Used for the fresh test towns of
models/README.md ("Training", 9): one town of 2 x 100 s at 2 Hz counts only about 78 queries per pair, too few to tell
one model from another.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAIRS = ["camera->lidar", "lidar->camera", "radar->lidar", "radar->camera", "camera->camera", "lidar->radar",
         "camera->radar", "lidar->lidar", "radar->radar"]
CROSS = ["camera->lidar", "lidar->camera", "radar->lidar", "radar->camera", "lidar->radar", "camera->radar"]


def pool(paths: list[Path]) -> dict[str, dict[str, float]]:
    """``{pair: {"recall@1", "hits", "counted"}}`` pooled over the eval JSON files ``paths`` (pairs absent from a file
    are pooled over the files that have them). ValueError names a file that cannot be pooled with the first."""
    if not paths:
        raise ValueError("no eval JSON files given")
    hits: dict[str, float] = {}
    counted: dict[str, int] = {}
    setting = None
    for path in paths:
        data = json.loads(Path(path).read_text())
        pairs = data.get("pairs")
        if not isinstance(pairs, dict) or not pairs:
            raise ValueError(f"{path}: no 'pairs' (not a `cmr-fusion eval --json` file)")
        first = next(iter(pairs.values()))
        this = (first.get("radius_m"), first.get("max_yaw_deg"))
        if setting is None:
            setting = this
        elif this != setting:
            raise ValueError(f"{path}: radius / heading limit {this} differ from the first file's {setting}")
        for pair, res in pairs.items():
            n = int(res["num_counted"])
            hits[pair] = hits.get(pair, 0.0) + float(res["recall@1"]) * n
            counted[pair] = counted.get(pair, 0) + n
    return {p: {"recall@1": hits[p] / counted[p] if counted[p] else float("nan"), "hits": round(hits[p]),
                "counted": counted[p]} for p in hits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="`cmr-fusion eval --json` files")
    parser.add_argument("--label", default="pooled", help="first column of the output line")
    args = parser.parse_args(argv)
    try:
        pooled = pool(args.files)
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as err:
        print(f"pool_recall: error: {err}", file=sys.stderr)
        return 2
    shown = [p for p in PAIRS if p in pooled]
    print(f"{'':12s} " + " ".join(f"{p:>14s}" for p in shown) + "  cross-modal mean")
    cross = [pooled[p]["recall@1"] for p in CROSS if p in pooled]
    print(f"{args.label:12s} " + " ".join(f"{pooled[p]['recall@1']:14.3f}" for p in shown)
          + (f"  {sum(cross) / len(cross):.3f}" if cross else "  n/a"))
    print(f"{'queries':12s} " + " ".join(f"{pooled[p]['counted']:14d}" for p in shown)
          + f"  ({len(args.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
