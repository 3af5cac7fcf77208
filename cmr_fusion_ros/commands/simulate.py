"""`cmr-fusion simulate`: generate a synthetic town and record sessions of camera, LiDAR, radar and odometry."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

HELP = ("generate a synthetic town driven by an ego vehicle with camera, LiDAR and radar, and record sessions "
        "as rosbag2 bags")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output directory (session_00/, session_01/, town.json)")
    parser.add_argument("--seed", type=int, default=0, help="town seed (same seed and options: identical messages)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of driving per session (default 60)")
    parser.add_argument("--sessions", type=int, default=1, help="recordings of the same town (default 1)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML with sensor rates/resolutions, town and route (default: config/sim_default.yaml)")
    parser.add_argument("--raw-images", action="store_true",
                        help="publish sensor_msgs/Image rgb8 on /camera/image instead of JPEG CompressedImage")
    parser.add_argument("--draw-rigs", action="store_true",
                        help="each session draws its own sensor rig from the config's rig ranges (camera resolution, "
                             "field of view and mount; LiDAR beams, columns, vertical field of view and mount; radar "
                             "field of view, point budget, noise and mount), seeded by --seed and the session index")
    parser.add_argument("--jobs", type=int, default=1, help="sessions rendered in parallel processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.paths import config_file, source_root
    from cmr_fusion_ros.sim.config import load_sim_config
    from cmr_fusion_ros.sim.recording import simulate_dataset, total_samples

    if args.duration <= 0:
        raise ConfigError("--duration", args.duration, "a number of seconds > 0")
    if args.sessions < 1:
        raise ConfigError("--sessions", args.sessions, "an integer >= 1")
    if args.jobs < 1:
        raise ConfigError("--jobs", args.jobs, "an integer >= 1")
    config_path = args.config if args.config is not None else config_file("sim_default.yaml")
    if args.config is None and not config_path.exists():  # an older install: use the source tree's file
        config_path = source_root() / "config" / "sim_default.yaml"
    if args.config is not None and not config_path.exists():
        raise ConfigError("--config", str(config_path), "an existing YAML file")
    config = load_sim_config(config_path if config_path.exists() else None)
    if args.draw_rigs:
        import dataclasses

        config = dataclasses.replace(config, rig=dataclasses.replace(config.rig, draw=True))
    cmd = (f"cmr-fusion simulate --out {shlex.quote(str(args.out))} --seed {args.seed} --duration {args.duration:g} "
           f"--sessions {args.sessions} --storage {args.storage}")
    cmd += f" --config {shlex.quote(str(args.config))}" if args.config is not None else ""
    cmd += " --raw-images" if args.raw_images else ""
    cmd += " --draw-rigs" if args.draw_rigs else ""
    cmd += f" --jobs {args.jobs}" if args.jobs != 1 else ""
    print(f"command: {cmd}")
    print(f"config: {config_path if config_path.exists() else '(built-in defaults)'}")
    total = total_samples(config, args.duration, args.sessions)
    start = time.perf_counter()
    cpu0 = time.process_time()
    with tqdm(total=total, unit="msg", disable=args.no_progress, desc="simulate", file=sys.stderr) as bar:
        record, results = simulate_dataset(
            args.out, seed=args.seed, duration=args.duration, sessions=args.sessions, config=config,
            storage=args.storage, raw_images=args.raw_images, jobs=args.jobs, progress=bar.update,
        )
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    for res, info in zip(results, record["sessions"]):
        counts = ", ".join(f"{t} {n}" for t, n in sorted(res.counts.items()))
        print(f"{res.path}: lighting {info['lighting']}, {res.sim_seconds:.1f} s simulated in {res.wall_seconds:.1f} s "
              f"wall; {counts}")
        if "rig" in info:
            rc, rl, rr = info["rig"]["camera"], info["rig"]["lidar"], info["rig"]["radar"]
            print(f"  rig: camera {rc['width']}x{rc['height']} hfov {rc['hfov_deg']:g} deg at {rc['translation']}; "
                  f"lidar {rl['beams']}x{rl['columns']} vfov {rl['vfov_min_deg']:g}..{rl['vfov_max_deg']:g} deg at "
                  f"{rl['translation']}; radar hfov {rr['hfov_deg']:g} deg, {rr['max_points']} points, range noise "
                  f"{rr['range_noise_std']:g} m at {rr['translation']}")
    sim_total = args.duration * args.sessions
    cam = config.camera
    lid = config.lidar
    print(f"town: seed {args.seed}, {record['counts']['buildings']} buildings, {record['counts']['trees']} trees, "
          f"{record['counts']['poles']} poles, loop {record['sessions'][0]['loop_length_m']:.0f} m -> "
          f"{Path(args.out) / 'town.json'}")
    print(("sensors (drawn per session above; the base config's): " if config.rig.draw else "sensors: ")
          + f"camera {cam.width}x{cam.height} @ {cam.rate_hz:g} Hz, lidar {lid.beams}x{lid.columns} @ "
          f"{lid.rate_hz:g} Hz, radar @ {config.radar.rate_hz:g} Hz, odom @ {config.odom.rate_hz:g} Hz")
    print(f"machine: {platform.node()} {platform.machine()}, {_cpus()} CPUs, python {platform.python_version()}, "
          f"jobs {args.jobs}")
    print(f"map: {Path(args.out) / 'town.png'}")
    print(f"speed: {sim_total:.1f} simulated s in {wall:.1f} wall s = {sim_total / wall:.2f} simulated s per wall s "
          f"(this process used {cpu:.1f} CPU s{'; workers not counted' if args.jobs > 1 else ''}; load average "
          f"{_load()})")
    return 0


def _load() -> str:
    import os

    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
