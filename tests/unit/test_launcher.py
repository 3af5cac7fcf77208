"""The graph description, the launch file built from it (launch modules stubbed), and the launcher's supervision
of plain (non-ROS) child processes: prefixed output, clean stop, crash report, escalation."""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.launcher import ChildSpec, Launcher, child_environment, describe_returncode
from cmr_fusion_ros.paths import config_file
from cmr_fusion_ros.ros.graph import (
    Mode,
    NodeSpec,
    build_graph,
    default_params_name,
    node_command,
    normalize_namespace,
    parse_module_overrides,
    ros_arguments,
)

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- graph

def test_all_in_one_graph_is_one_fusion_node():
    (node,) = build_graph("all_in_one")
    assert node == NodeSpec("fusion_node", "fusion_node", "cmr_fusion_ros.ros.fusion_node")


def test_split_graph_has_an_encoder_per_modality_and_the_memory():
    graph = build_graph(Mode.SPLIT)
    assert [n.name for n in graph] == ["camera_encoder", "lidar_encoder", "radar_encoder", "memory_node"]
    assert [dict(n.parameters) for n in graph[:3]] == [{"modality": m} for m in ("camera", "lidar", "radar")]
    assert {n.executable for n in graph[:3]} == {"encoder_node"} and graph[3].executable == "memory_node"
    assert {n.module for n in graph} == {"cmr_fusion_ros.ros.encoder_node", "cmr_fusion_ros.ros.memory_node"}


def test_unknown_mode_is_named():
    with pytest.raises(ConfigError, match="'mode'.*'both'.*all_in_one \\| split"):
        build_graph("both")


def test_node_command_is_python_m_with_ros_args(tmp_path):
    spec = build_graph("split")[1]
    cmd = node_command(spec, "/venv/bin/python", namespace="robot1", params_file=tmp_path / "p.yaml",
                       use_sim_time=True)
    assert cmd == ["/venv/bin/python", "-m", "cmr_fusion_ros.ros.encoder_node", "--ros-args",
                   "-r", "__node:=lidar_encoder", "-r", "__ns:=/robot1", "--params-file", str(tmp_path / "p.yaml"),
                   "-p", "modality:=lidar", "-p", "use_sim_time:=true"]
    plain = ros_arguments(build_graph()[0])
    assert plain == ["--ros-args", "-r", "__node:=fusion_node", "-p", "use_sim_time:=false"]
    assert node_command(build_graph()[0], "py", module="my.module")[:3] == ["py", "-m", "my.module"]


@pytest.mark.parametrize("given, expected", [("", ""), ("/", ""), (None, ""), ("robot1", "/robot1"),
                                             ("/fleet/robot_2/", "/fleet/robot_2")])
def test_namespaces(given, expected):
    assert normalize_namespace(given) == expected


@pytest.mark.parametrize("bad", ["1robot", "a//b", "a b", "a-b"])
def test_bad_namespace_is_named(bad):
    with pytest.raises(ConfigError, match="'namespace'"):
        normalize_namespace(bad)


def test_module_overrides():
    graph = build_graph("split")
    assert parse_module_overrides(["memory_node=tests.x"], graph) == {"memory_node": "tests.x"}
    with pytest.raises(ConfigError, match="a node of this graph: camera_encoder"):
        parse_module_overrides(["fusion_node=a.b"], graph)
    with pytest.raises(ConfigError, match="'--node-module'.*'memory_node'"):
        parse_module_overrides(["memory_node"], graph)


# ---------------------------------------------------------------- launch file (launch / launch_ros stubbed)

def _stub_launch_modules(monkeypatch) -> dict:
    made: dict[str, list] = {"nodes": []}

    class LaunchDescription:
        def __init__(self, entities):
            self.entities = list(entities)

    class DeclareLaunchArgument:
        def __init__(self, name, default_value=None, description="", choices=None):
            self.name, self.default_value, self.choices = name, default_value, choices

    class OpaqueFunction:
        def __init__(self, function):
            self.function = function

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    class Node:
        def __init__(self, **kwargs):
            self.kwargs = kwargs
            made["nodes"].append(kwargs)

    mods = {
        "launch": types.ModuleType("launch"),
        "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    mods["launch"].LaunchDescription = LaunchDescription
    mods["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    mods["launch.actions"].OpaqueFunction = OpaqueFunction
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = Node
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return made


def _load_launch_file():
    spec = importlib.util.spec_from_file_location("fusion_launch_under_test", REPO / "launch" / "fusion_launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode, use_sim_time, params, namespace", [
    ("all_in_one", "false", "", ""),
    ("split", "true", "/etc/fusion.yaml", "robot1"),
    ("all_in_one", "true", "default", ""),
    ("split", "false", "default", "/"),
    ("all_in_one", "True", "", ""),
])
def test_launch_file_builds_the_same_graph(monkeypatch, mode, use_sim_time, params, namespace):
    made = _stub_launch_modules(monkeypatch)
    desc = _load_launch_file().generate_launch_description()
    args = {e.name: e for e in desc.entities if hasattr(e, "name")}
    assert set(args) == {"params_file", "use_sim_time", "mode", "namespace"}
    assert args["mode"].default_value == "all_in_one" and args["mode"].choices == ["all_in_one", "split"]
    assert args["use_sim_time"].default_value == "false" and args["params_file"].default_value == "default"
    (opaque,) = [e for e in desc.entities if hasattr(e, "function")]
    nodes = opaque.function({"mode": mode, "use_sim_time": use_sim_time, "params_file": params,
                             "namespace": namespace})
    assert len(nodes) == len(made["nodes"])
    graph = build_graph(mode)
    assert [n["name"] for n in made["nodes"]] == [s.name for s in graph]
    if params == "default":  # the mode's shipped file
        params = str(config_file(default_params_name(mode)))
        assert Path(params).is_file()
    for kwargs, spec in zip(made["nodes"], graph):
        assert kwargs["package"] == "cmr_fusion_ros" and kwargs["executable"] == spec.executable
        assert kwargs["namespace"] == normalize_namespace(namespace)
        expected = ([params] if params else []) + [{**spec.parameters,
                                                    "use_sim_time": use_sim_time.lower() == "true"}]
        assert kwargs["parameters"] == expected


def test_each_mode_has_a_shipped_parameters_file_naming_its_nodes():
    import yaml

    for mode in Mode:
        data = yaml.safe_load(config_file(default_params_name(mode)).read_text())
        assert {s.name for s in build_graph(mode)} <= set(data), mode


# ---------------------------------------------------------------- launcher with plain child processes

CHILD = r"""
import os, signal, sys, time
name, mode = sys.argv[1], sys.argv[2]
def on_int(*_):
    print(f"{name} got SIGINT", flush=True)
    sys.exit(5 if mode == "bad-exit" else 0)
signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "stubborn" else on_int)
print(f"{name} ready", flush=True)
print(f"{name} to stderr", file=sys.stderr, flush=True)
if mode == "crash":
    time.sleep(0.3)
    sys.exit(3)
while True:
    time.sleep(0.02)
"""


class Output(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            return super().write(s)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


def _child(name: str, mode: str = "normal") -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", CHILD, name, mode))


def _run(children, *, stop_after_ready: bool = True, stops: int = 1, **kw):
    out, log = Output(), []
    launcher = Launcher(children, env=dict(os.environ), out=out, log=log.append, **kw)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(launcher.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while stop_after_ready and time.monotonic() < deadline and thread.is_alive():
        if all(f"{c.name} ready" in out.text() for c in children):
            for _ in range(stops):
                launcher.request_stop()
                time.sleep(0.2)
            break
        time.sleep(0.02)
    thread.join(timeout=60)
    assert not thread.is_alive(), "launcher did not finish"
    return result[0], out.text(), "\n".join(log), launcher


def test_clean_stop_forwards_sigint_and_prefixes_output():
    code, out, log, launcher = _run([_child("alpha"), _child("beta_longer")])
    assert code == 0, log
    assert "[alpha]       alpha ready" in out and "[beta_longer] beta_longer ready" in out
    assert "[alpha]       alpha to stderr" in out  # stderr is merged and prefixed too
    assert "alpha got SIGINT" in out and "beta_longer got SIGINT" in out
    assert all(r.returncode == 0 and r.signals_sent == ["SIGINT"] for r in launcher.results.values())
    assert "alpha: stopped cleanly" in log and "beta_longer: stopped cleanly" in log


def test_a_crashed_child_is_named_and_the_others_are_stopped():
    code, out, log, launcher = _run([_child("steady"), _child("crasher", "crash")], stop_after_ready=False)
    assert code == 1
    assert "crasher exited unexpectedly (exit code 3)" in log
    assert "steady got SIGINT" in out and launcher.results["steady"].returncode == 0
    assert launcher.results["crasher"].unexpected and launcher.results["crasher"].signals_sent == []


def test_a_child_ignoring_sigint_gets_sigterm_and_the_exit_is_non_zero():
    code, out, log, launcher = _run([_child("ok"), _child("stubborn", "stubborn")], sigint_timeout=0.5)
    assert code == 1
    assert launcher.results["stubborn"].signals_sent == ["SIGINT", "SIGTERM"]
    assert launcher.results["stubborn"].returncode == -15
    assert "stubborn still running; sending SIGTERM" in log
    assert "stubborn: did not stop cleanly: killed by SIGTERM after SIGINT, SIGTERM" in log
    assert launcher.results["ok"].returncode == 0


def test_a_second_stop_request_escalates_without_waiting():
    # with a 120 s SIGINT timeout, only the second request can end this run before the join timeout
    code, _, log, launcher = _run([_child("stubborn", "stubborn")], sigint_timeout=120.0, stops=2)
    assert code == 1 and launcher.results["stubborn"].signals_sent == ["SIGINT", "SIGTERM"]


def test_a_child_exiting_non_zero_on_sigint_fails_the_launch():
    code, _, log, _ = _run([_child("bad", "bad-exit")])
    assert code == 1 and "bad: did not stop cleanly: exit code 5 after SIGINT" in log


def test_a_child_that_cannot_start_is_reported(tmp_path):
    code, _, log, launcher = _run([_child("fine"), ChildSpec("ghost", (str(tmp_path / "no-such-program"),))],
                                  stop_after_ready=False)
    assert code == 1 and "cannot start ghost" in log and "ghost" not in launcher.results
    # the child started before it is stopped at once (maybe before it installed its own SIGINT handler)
    assert launcher.results["fine"].signals_sent[0] == "SIGINT" and launcher.results["fine"].returncode is not None


def test_children_need_distinct_names():
    with pytest.raises(ValueError, match="distinct names"):
        Launcher([_child("a"), _child("a")], env={})


def test_describe_returncode():
    assert describe_returncode(0) == "exit code 0" and describe_returncode(-9) == "killed by SIGKILL"
    assert describe_returncode(None) == "still running"


def test_child_environment_keeps_user_settings_and_adds_defaults():
    env = child_environment({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "PATH": "/bin"})
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"  # the user's choice wins
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp" and env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith(".xml")
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/bin"
    fresh = child_environment({})
    assert fresh["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


# ---------------------------------------------------------------- the command's plan

def _args(**kw) -> argparse.Namespace:
    from cmr_fusion_ros.commands import launch

    parser = argparse.ArgumentParser()
    launch.add_arguments(parser)
    argv = []
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            for v in value:
                argv += [flag, v]
        else:
            argv += [flag, str(value)]
    return parser.parse_args(argv)


def test_launch_plan_split_with_params_and_overrides(tmp_path):
    from cmr_fusion_ros.commands.launch import plan

    params = tmp_path / "fusion.yaml"
    params.write_text("/**:\n  ros__parameters: {}\n")
    children = plan(_args(params=params, mode="split", use_sim_time=True, namespace="r2",
                          node_module=["memory_node=tests.process.launcher_node"]))
    assert [c.name for c in children] == ["camera_encoder", "lidar_encoder", "radar_encoder", "memory_node"]
    assert children[3].argv[:3] == (sys.executable, "-m", "tests.process.launcher_node")
    assert children[0].argv[2] == "cmr_fusion_ros.ros.encoder_node"
    for c in children:
        assert ("--params-file", str(params.resolve())) == tuple(c.argv[c.argv.index("--params-file"):][:2])
        assert "use_sim_time:=true" in c.argv and "__ns:=/r2" in c.argv
    (default,) = plan(_args(mode="split"))[:1]
    assert default.argv[default.argv.index("--params-file") + 1] == str(config_file("split.yaml").resolve())


def test_launch_plan_errors_name_the_option(tmp_path):
    from cmr_fusion_ros.commands.launch import plan

    with pytest.raises(ConfigError, match="'--params-file'"):
        plan(_args(params=tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="'--sigint-timeout'"):
        plan(_args(sigint_timeout=0))
    with pytest.raises(ConfigError, match="'namespace'"):
        plan(_args(namespace="9x"))


def test_every_graph_node_has_a_module_and_a_console_script():
    setup_py = (REPO / "setup.py").read_text()
    for mode in Mode:
        for spec in build_graph(mode):
            assert importlib.util.find_spec(spec.module) is not None, spec.module
            assert f'"{spec.executable} = {spec.module}:main"' in setup_py, spec.executable
