"""`cmr-fusion memory export|import|grant`: move memories between a local folder and a PostgreSQL memory."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("move memories: `memory export|import` between a local memory folder and a PostgreSQL memory; "
        "`memory grant` lets a robot's login role write and search")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--uri", required=True, help="postgresql:// URI of the fleet memory (no password: use "
                                                     "PGPASSFILE, ~/.pgpass or --passfile)")
    common.add_argument("--passfile", default="", help="libpq password file (memory.postgres.passfile)")
    e = sub.add_parser("export", parents=[common], help="PostgreSQL memory -> new local memory folder")
    e.add_argument("--to", type=Path, required=True, help="new (missing or empty) local memory folder")
    e.add_argument("--robot", default="", help="only this robot's entries (needed when several robots wrote)")
    e.add_argument("--dim", type=int, default=256, help="embedding size (memory.dim)")
    i = sub.add_parser("import", parents=[common], help="local memory folder -> PostgreSQL memory")
    i.add_argument("--from", dest="source", type=Path, required=True, help="local memory folder")
    i.add_argument("--robot", required=True, help="robot id the entries are stored under (memory.robot_id)")
    g = sub.add_parser("grant", parents=[common], help="let an existing LOGIN role insert and search "
                                                       "(member of cmr_robot; it may delete only its own rows)")
    g.add_argument("--role", required=True, help="the LOGIN role (a robot) to add to the group cmr_robot")
    g.add_argument("--dim", type=int, default=256, help="embedding size (memory.dim), to create the schema")


def _config(args: argparse.Namespace, dim: int = 256):
    from cmr_fusion_ros.core.memory import MemoryConfig

    return MemoryConfig.from_dict({"dim": dim, "store": "postgres",
                                   "postgres": {"uri": args.uri, "passfile": args.passfile}})


def run(args: argparse.Namespace) -> int:
    from cmr_fusion_ros.core.memory import transfer

    if args.mode == "import":
        n, block = transfer.import_from_folder(args.source, _config(args), args.robot)
        print(f"imported {n} entries from {args.source} as robot {args.robot!r} (id block {block})")
    elif args.mode == "export":
        n = transfer.export_to_folder(_config(args, args.dim), args.to, args.robot)
        print(f"exported {n} entries{f' of robot {args.robot!r}' if args.robot else ''} to {args.to}")
    else:
        from cmr_fusion_ros.core.memory.postgres import PostgresMemory

        with PostgresMemory(_config(args, args.dim)) as mem:  # creates the schema and the cmr_robot role
            mem.grant(args.role)
        print(f"role {args.role!r} may now insert and search the memory")
    return 0
