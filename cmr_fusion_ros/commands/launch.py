"""`cmr-fusion launch`: the graph of launch/fusion_launch.py as child processes, for machines without ros2 launch."""

from __future__ import annotations

import argparse
import shlex
import sys

from cmr_fusion_ros.cli_options import add_params_file

HELP = "start the fusion graph (all-in-one or split nodes) as child processes, without ros2 launch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_file(parser, "parameters YAML (node_name: ros__parameters: form); default: the package's "
                            "config/fusion.yaml (all_in_one) or config/split.yaml (split) when it exists")
    parser.add_argument("--mode", choices=("all_in_one", "split"), default="all_in_one",
                        help="one fusion_node, or one encoder_node per modality + memory_node (default all_in_one)")
    parser.add_argument("--use-sim-time", action="store_true", help="nodes follow /clock (e.g. from replay --clock)")
    parser.add_argument("--namespace", default="", metavar="NS", help="namespace for every node (default: root)")
    parser.add_argument("--dry-run", action="store_true", help="print the environment and commands, start nothing")
    parser.add_argument("--sigint-timeout", type=float, default=10.0, metavar="S",
                        help="after SIGINT, wait S seconds for the nodes to save and exit before SIGTERM (default 10)")
    parser.add_argument("--sigterm-timeout", type=float, default=5.0, metavar="S",
                        help="after SIGTERM, wait S seconds before SIGKILL (default 5)")
    parser.add_argument("--node-module", action="append", default=[], metavar="NAME=MODULE",
                        help="run node NAME from another python module with main() (debugging, profiling, tests)")


def plan(args: argparse.Namespace) -> list:
    """The child processes for these arguments (validated), as launcher ChildSpecs."""
    from cmr_fusion_ros.core.errors import ConfigError
    from cmr_fusion_ros.launcher import ChildSpec
    from cmr_fusion_ros.paths import config_file
    from cmr_fusion_ros.ros.graph import build_graph, default_params_name, node_command, normalize_namespace
    from cmr_fusion_ros.ros.graph import parse_module_overrides

    params = args.params
    if params is None:
        default = config_file(default_params_name(args.mode))
        params = default if default.is_file() else None
    elif not params.is_file():
        raise ConfigError("--params-file", str(params), "an existing parameters YAML file")
    for key in ("sigint_timeout", "sigterm_timeout"):
        value = getattr(args, key)
        if not value > 0:
            raise ConfigError("--" + key.replace("_", "-"), value, "a number of seconds > 0")
    namespace = normalize_namespace(args.namespace)
    graph = build_graph(args.mode)
    modules = parse_module_overrides(args.node_module, graph)
    return [ChildSpec(spec.name, tuple(node_command(spec, sys.executable, namespace=namespace,
                                                    params_file=params.resolve() if params else None,
                                                    use_sim_time=args.use_sim_time, module=modules.get(spec.name))))
            for spec in graph]


def run(args: argparse.Namespace) -> int:
    import os

    from cmr_fusion_ros.launcher import Launcher, child_environment

    children = plan(args)
    env = child_environment()
    if args.dry_run:
        for key in sorted(k for k in env if env[k] != os.environ.get(k)):
            print(f"{key}={shlex.quote(env[key])}")
        for child in children:
            print(f"{child.name}: {shlex.join(child.argv)}")
        return 0
    if not any("--params-file" in c.argv for c in children):
        print("[launcher] no parameters file (none given, no default in config/): nodes use their defaults",
              file=sys.stderr, flush=True)
    launcher = Launcher(children, env=env, sigint_timeout=args.sigint_timeout, sigterm_timeout=args.sigterm_timeout)
    return launcher.run()
