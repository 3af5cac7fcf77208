"""`cmr-fusion process`: a bag through the pipeline offline, at full speed, without DDS."""

from __future__ import annotations

import argparse
from pathlib import Path

from cmr_fusion_ros.cli_options import add_look_ahead, add_no_progress, add_params_file

HELP = "process bags offline (no DDS, full speed): match events to JSONL and an mcap bag, plus a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories (sqlite3 or mcap), merged in time")
    parser.add_argument("--out", type=Path, required=True, help="output folder (events.jsonl, matches/, summary.json)")
    add_params_file(parser, "ROS 2 parameter file (default: the installed config/fusion.yaml)")
    parser.add_argument("--node-name", default="fusion_node", help="node section to read from --params-file")
    parser.add_argument("--models", type=Path, default=None, help="models folder (overrides encoders.models_dir)")
    parser.add_argument("--memory", type=Path, default=None,
                        help="memory folder (default: OUT/memory; an existing memory is loaded and extended)")
    parser.add_argument("--namespace", default="/", help="namespace the relative topics resolve in (default /)")
    parser.add_argument("--robot", default=None, help="memory.robot_id of the new entries (default: the params', "
                                                      "else the namespace, else the host name)")
    parser.add_argument("--memory-uri", default=None,
                        help="memory.store postgres at this postgresql:// URI (a fleet memory) instead of a folder")
    parser.add_argument("--radius", type=float, default=10.0, help="ground-truth radius of a true revisit (m)")
    parser.add_argument("--modalities", default=None, metavar="M1,M2",
                        help="modalities to process, comma-separated subset of camera,lidar,radar (default: every "
                             "enabled stream whose topic is in the bags; absent ones are skipped and reported)")
    add_look_ahead(parser)
    add_no_progress(parser)
    parser.add_argument("--rig-from-bag", action="store_true",
                        help="take the sensor mounts and camera intrinsics the rig-aware inputs need from the first "
                             "bag's /tf_static and CameraInfo where the rig.* parameters give none (a live node reads "
                             "only the parameters: without this flag process gives the node's events)")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from cmr_fusion_ros.bag.inventory import choose_modalities, pair_names, parse_modalities
    from cmr_fusion_ros.bag.offline import process_bags, resolve_topic
    from cmr_fusion_ros.core.config import FusionConfig, load_parameter_file
    from cmr_fusion_ros.paths import config_file

    params_path = args.params or config_file("fusion.yaml")
    config = FusionConfig.from_dict(load_parameter_file(params_path, args.node_name), source=str(params_path))
    memory_dir = str(args.memory) if args.memory else str(args.out / "memory")
    config = dataclasses.replace(
        config,
        memory=dataclasses.replace(config.memory, persistence=dataclasses.replace(
            config.memory.persistence, directory=memory_dir)),
        encoders=dataclasses.replace(config.encoders, models_dir=str(args.models)) if args.models else config.encoders,
    )
    if args.robot is not None or args.memory_uri:
        from cmr_fusion_ros.core.memory import MemoryConfig

        memory = config.to_dict()["memory"]
        if args.robot is not None:
            memory["robot_id"] = args.robot
        if args.memory_uri:
            memory["store"] = "postgres"
            memory["postgres"]["uri"] = args.memory_uri
            memory_dir = f"the database {args.memory_uri}"
        config = dataclasses.replace(config, memory=MemoryConfig.from_dict(memory))
    topics = _bag_topics(args.bags)
    wanted = {m: resolve_topic(config.stream(m).topic, args.namespace) for m in config.enabled_modalities}
    mods = choose_modalities([m for m, t in wanted.items() if t in topics], parse_modalities(args.modalities),
                             ", ".join(map(str, args.bags)), minimum=1)
    config = dataclasses.replace(config, streams=tuple(
        (m, s if m in mods else dataclasses.replace(s, enabled=False)) for m, s in config.streams))
    print(f"command: cmr-fusion process {' '.join(map(str, args.bags))} --out {args.out} --params {params_path}"
          + (f" --modalities {args.modalities}" if args.modalities else "") + f" --look-ahead {args.look_ahead}")
    skipped = [f"{m.value} ({'not chosen' if t in topics else f'no topic {t} in the bags'})"
               for m, t in wanted.items() if m not in mods]
    print(f"modalities: {', '.join(m.value for m in mods)}" + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    summary = process_bags(args.bags, config, out_dir=args.out, namespace=args.namespace, node_name=args.node_name,
                           truth_radius_m=args.radius, progress=not args.no_progress, rig_from_bag=args.rig_from_bag,
                           look_ahead=args.look_ahead)
    for line in summary.lines():
        print(line)
    print(_pairs_line(args.out / "events.jsonl", mods, pair_names))
    print(f"wrote {args.out / 'events.jsonl'}, {args.out / 'matches'} (mcap), {args.out / 'summary.json'}, "
          f"memory in {memory_dir}")
    return 0


def _bag_topics(bags: list[Path]) -> dict[str, str]:
    """Topic -> message type over all bags (metadata only)."""
    from rosbags.highlevel import AnyReader

    from cmr_fusion_ros.core.errors import BagError

    out: dict[str, str] = {}
    for bag in bags:
        if not bag.exists():
            raise BagError(str(bag), "no such bag")
        try:
            with AnyReader([bag]) as reader:
                out.update({c.topic: c.msgtype for c in reader.connections})
        except Exception as err:  # rosbags raises several unrelated error types
            raise BagError(str(bag), f"cannot open the bag: {err}") from err
    return out


def _pairs_line(events_file: Path, mods, pair_names) -> str:
    """The query -> match pairs these modalities can give, with the events of each (routes may leave some empty)."""
    import json
    from collections import Counter

    counts: Counter = Counter()
    if events_file.is_file():
        for line in events_file.read_text().splitlines():
            if line.strip():
                e = json.loads(line)
                counts[f"{e['query_modality']}->{e['match_modality']}"] += 1
    present, _ = pair_names(mods, mods)
    return "events by pair (of the pairs these modalities can give): " + ", ".join(f"{p} {counts[p]}" for p in present)
