"""The node graph both launchers start, as plain data (no rclpy, no launch imports).

``launch/fusion_launch.py`` turns it into ``launch_ros.actions.Node`` actions for ``ros2 launch``;
``cmr-fusion launch`` (:mod:`cmr_fusion_ros.launcher`) starts the same nodes as child processes with
``python -m <module> --ros-args ...``. Keeping one description means the two cannot drift apart.

* ``all_in_one``: one ``fusion_node`` (lowest latency);
* ``split``: one ``encoder_node`` per modality (``camera_encoder``, ``lidar_encoder``, ``radar_encoder``, each with the
  ``modality`` parameter) and one ``memory_node``, so encoders can run on a GPU host and the memory elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.types import Modality

__all__ = ["Mode", "NodeSpec", "build_graph", "default_params_name", "node_command", "normalize_namespace",
           "parse_module_overrides", "ros_arguments", "DEFAULT_PARAMS_FILES", "PACKAGE"]

PACKAGE = "cmr_fusion_ros"
_NS_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Mode(str, Enum):
    ALL_IN_ONE = "all_in_one"
    SPLIT = "split"

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        try:
            return cls(value)
        except ValueError:
            raise ConfigError("mode", value, " | ".join(m.value for m in cls)) from None


# the parameters file each mode uses when none is given, under the package's config/ folder
DEFAULT_PARAMS_FILES = {Mode.ALL_IN_ONE: "fusion.yaml", Mode.SPLIT: "split.yaml"}


def default_params_name(mode: str | Mode) -> str:
    return DEFAULT_PARAMS_FILES[Mode.parse(mode)]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node: its name in the graph, the console script / module that runs it, and its own parameters."""

    name: str
    executable: str  # console script installed by the package (what launch_ros starts)
    module: str  # python module with main(args=None) (what cmr-fusion launch starts)
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)


def normalize_namespace(namespace: str | None) -> str:
    """'' or '/' -> '' (the root); 'robot1' -> '/robot1'; invalid -> ConfigError naming 'namespace'."""
    if namespace is None:
        return ""
    ns = namespace.strip()
    if ns in ("", "/"):
        return ""
    ns = "/" + ns.strip("/")
    if "//" in namespace.strip().strip("/") or not all(_NS_TOKEN.match(t) for t in ns[1:].split("/")):
        raise ConfigError("namespace", namespace, "a ROS namespace, e.g. robot1 or /fleet/robot1")
    return ns


def build_graph(mode: str | Mode = Mode.ALL_IN_ONE) -> tuple[NodeSpec, ...]:
    """The nodes of the graph for ``mode``."""
    mode = Mode.parse(mode)
    if mode is Mode.ALL_IN_ONE:
        return (NodeSpec("fusion_node", "fusion_node", f"{PACKAGE}.ros.fusion_node"),)
    encoders = tuple(
        NodeSpec(f"{m.value}_encoder", "encoder_node", f"{PACKAGE}.ros.encoder_node", {"modality": m.value})
        for m in Modality
    )
    return (*encoders, NodeSpec("memory_node", "memory_node", f"{PACKAGE}.ros.memory_node"))


def _param_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ros_arguments(spec: NodeSpec, *, namespace: str = "", params_file: str | Path | None = None,
                  use_sim_time: bool = False) -> list[str]:
    """The ``--ros-args`` part of a node's command line (what ``ros2 launch`` would pass it)."""
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if namespace:
        args += ["-r", f"__ns:={normalize_namespace(namespace)}"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    for key, value in spec.parameters.items():
        args += ["-p", f"{key}:={_param_text(value)}"]
    args += ["-p", f"use_sim_time:={_param_text(use_sim_time)}"]
    return args


def node_command(spec: NodeSpec, python: str, *, namespace: str = "", params_file: str | Path | None = None,
                 use_sim_time: bool = False, module: str | None = None) -> list[str]:
    """``python -m <module> --ros-args ...``; ``module`` replaces the spec's module (tests, profiling)."""
    return [python, "-m", module or spec.module,
            *ros_arguments(spec, namespace=namespace, params_file=params_file, use_sim_time=use_sim_time)]


def parse_module_overrides(values: Sequence[str] | None, graph: Sequence[NodeSpec]) -> dict[str, str]:
    """``NAME=MODULE`` pairs (``--node-module``) -> {node name: module}; names must be nodes of the graph."""
    names = [s.name for s in graph]
    out: dict[str, str] = {}
    for text in values or ():
        name, sep, module = text.partition("=")
        name, module = name.strip(), module.strip()
        if not sep or not module or not all(part.isidentifier() for part in module.split(".")):
            raise ConfigError("--node-module", text, "NAME=python.module, e.g. fusion_node=my_pkg.my_node")
        if name not in names:
            raise ConfigError("--node-module", text, "a node of this graph: " + ", ".join(names))
        out[name] = module
    return out
