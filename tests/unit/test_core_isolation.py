"""The core, eval, bag and sim never import ROS: checked in a fresh interpreter (this test process may have rclpy
loaded), and in the source, where an import inside a function would not show at import time: only
``cmr_fusion_ros/ros/`` (the thin ROS adapters) imports rclpy or a ``*_msgs`` package."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import cmr_fusion_ros

PACKAGE_DIR = Path(cmr_fusion_ros.__file__).resolve().parent
NO_ROS_PACKAGES = ("core", "eval", "bag", "sim")
# CLI glue outside ros/ that imports ROS itself, each with its reason; nothing else may.
ALLOWED = {
    "commands/convert_check.py": "round-trips rclpy messages through rclpy.serialization to check the conversions",
}

CODE = """
import json, sys
import cmr_fusion_ros.core
import cmr_fusion_ros.core.pointcloud, cmr_fusion_ros.core.image, cmr_fusion_ros.core.radar
import cmr_fusion_ros.core.sensor_files
mods = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.') or m.endswith('_msgs') or '_msgs.' in m]
print(json.dumps(mods))
"""

EVERY_MODULE = """
import importlib, json, pkgutil, sys
names = []
for pkg in sys.argv[1:]:
    p = importlib.import_module('cmr_fusion_ros.' + pkg)
    names.append(p.__name__)
    names += [importlib.import_module(i.name).__name__ for i in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]
mods = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.') or m.endswith('_msgs') or '_msgs.' in m]
print(json.dumps({"imported": names, "ros": mods}))
"""


def _fresh(code: str, *args: str) -> str:
    # The venv's python and the parent's environment (the ROS wheels' bootstrap needs both).
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=dict(os.environ),
                         timeout=120, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_importing_core_leaves_rclpy_out():
    assert json.loads(_fresh(CODE)) == []


def test_importing_every_module_of_core_eval_bag_sim_leaves_rclpy_out():
    got = json.loads(_fresh(EVERY_MODULE, *NO_ROS_PACKAGES))
    assert got["ros"] == []
    expected = {f"cmr_fusion_ros.{'.'.join(p.relative_to(PACKAGE_DIR).with_suffix('').parts)}".removesuffix(".__init__")
                for pkg in NO_ROS_PACKAGES for p in (PACKAGE_DIR / pkg).rglob("*.py")}
    assert set(got["imported"]) == expected  # every module was imported, none skipped
    assert {"cmr_fusion_ros.eval.bench_pipeline", "cmr_fusion_ros.eval.stress"} <= expected


def ros_imports(source: str) -> list[str]:
    """``line: module`` of every import of rclpy or a ``*_msgs`` package in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] == "rclpy" or n.split(".")[0].endswith("_msgs")]
    return [f"{line}: {name}" for line, name in sorted(found)]


def test_the_static_check_sees_imports_inside_functions():
    src = ("import os\nfrom cmr_fusion_ros.core import types\n\ndef f():\n    import rclpy\n"
           "    from rclpy.qos import QoSProfile\n\nclass C:\n    def g(self):\n"
           "        from diagnostic_msgs.msg import DiagnosticArray\n        import sensor_msgs.msg as m\n")
    assert ros_imports(src) == ["5: rclpy", "6: rclpy.qos", "10: diagnostic_msgs.msg", "11: sensor_msgs.msg"]
    assert ros_imports("from . import ros_msgs_helpers\nimport my_msgs_x\n") == []


def test_only_the_ros_layer_imports_rclpy_or_msgs():
    offenders = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if rel.startswith("ros/") or rel in ALLOWED:
            continue
        if found := ros_imports(path.read_text()):
            offenders[rel] = found
    assert offenders == {}, f"ROS imports outside cmr_fusion_ros/ros/ (move them into a ros/ module): {offenders}"
    for rel in ALLOWED:  # an exception that is no longer needed goes away
        assert ros_imports((PACKAGE_DIR / rel).read_text()), f"{rel} no longer imports ROS: drop it from ALLOWED"


def layer_imports(source: str, layer: str) -> list[str]:
    """``line: module`` of every import of ``cmr_fusion_ros.<layer>`` in ``source``, at any depth."""
    prefix = f"cmr_fusion_ros.{layer}"
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "cmr_fusion_ros"]
        else:
            continue
        found += [(node.lineno, n) for n in names if n == prefix or n.startswith(prefix + ".")]
    return [f"{line}: {name}" for line, name in sorted(found)]


def test_layers_import_downward_only():
    """``ros/`` may use ``eval/`` (a bench's statistics), never the reverse: no module of core, eval, bag or sim
    imports ``cmr_fusion_ros.ros`` (the eval <-> ros circle of the benches and stress runs is gone)."""
    assert layer_imports("def f():\n    from cmr_fusion_ros.ros import stress_runs\n", "ros") == ["2: cmr_fusion_ros.ros"]
    assert layer_imports("from cmr_fusion_ros.ros.bench_nodes import X\nimport cmr_fusion_ros.rosenv\n", "ros") == [
        "1: cmr_fusion_ros.ros.bench_nodes"]
    offenders = {}
    for pkg in NO_ROS_PACKAGES:
        for path in sorted((PACKAGE_DIR / pkg).rglob("*.py")):
            if found := layer_imports(path.read_text(), "ros"):
                offenders[path.relative_to(PACKAGE_DIR).as_posix()] = found
    assert offenders == {}, f"imports of cmr_fusion_ros.ros below it: {offenders}"
