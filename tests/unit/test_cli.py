"""The `cmr-fusion` entry point and the conversion check (the foundation's demo)."""

from __future__ import annotations

import os
import subprocess
import sys

from cmr_fusion_ros.cli import COMMANDS, HELP, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmr_fusion_ros.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def test_every_command_has_help_and_a_module():
    assert set(COMMANDS) == set(HELP)
    for name, module in COMMANDS.items():
        mod = __import__(f"cmr_fusion_ros.commands.{module}", fromlist=["HELP"])
        assert mod.HELP and callable(mod.add_arguments) and callable(mod.run), name


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as done:
        assert done.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_every_command_help_prints_its_text_verbatim(capsys):
    """Descriptions are printed as written ('1%' stays '1%'); every command's --help exits 0."""
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as done:
            assert done.code == 0, name
        out = " ".join(capsys.readouterr().out.split())
        mod = __import__(f"cmr_fusion_ros.commands.{COMMANDS[name]}", fromlist=["HELP"])
        assert " ".join(mod.HELP.split()) in out, name
        assert "%%" not in out, name
    try:
        main(["--help"])
    except SystemExit:
        pass
    assert "%%" not in capsys.readouterr().out


def test_convert_check_on_real_samples():
    done = run_cli("convert-check", "--repeat", "1")
    assert done.returncode == 0, done.stderr
    assert "conversions lossless" in done.stdout and "LOSS in" not in done.stderr
    assert "lidar.pcd" in done.stdout and "front_radar.csv" in done.stdout


def test_convert_check_missing_folder_is_a_clear_error(tmp_path):
    done = run_cli("convert-check", "--data", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert "nope: no such folder" in done.stderr


def _parsers():
    """Every command's parser and sub-parser, with its name."""
    import argparse
    import importlib

    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}")

    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"cmr_fusion_ros.commands.{module}")
        parser = argparse.ArgumentParser(prog=f"cmr-fusion {name}", description=mod.HELP)
        mod.add_arguments(parser)
        yield from walk(parser, name)


def test_every_option_has_help_text():
    import argparse

    missing = [f"{name} {a.option_strings or a.dest}" for name, p in _parsers() for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not missing


def test_params_file_everywhere_with_params_as_alias():
    with_params = {name: p for name, p in _parsers()
                   if any("--params" in a.option_strings for a in p._actions)}
    assert {"launch", "process", "demo", "bench offline", "bench pipeline", "stress crash", "stress overload",
            "stress soak"} <= set(with_params)
    for name, p in with_params.items():
        [action] = [a for a in p._actions if "--params" in a.option_strings]
        assert action.option_strings == ["--params-file", "--params"] and action.dest == "params", name


def test_long_commands_can_turn_progress_off():
    long = {"simulate", "import dgp", "train", "eval", "replay", "process", "bench memory", "bench offline",
            "stress crash", "stress soak", "calibrate"}  # the commands that draw a progress bar
    have = {name for name, p in _parsers() if any("--no-progress" in a.option_strings for a in p._actions)}
    assert long <= have


def test_version_and_bench_help_names_all_benchmarks(capsys):
    from cmr_fusion_ros import __version__

    for argv in (["--version"], ["bench", "--help"]):
        try:
            main(argv)
        except SystemExit as done:
            assert done.code == 0
    out = capsys.readouterr().out
    assert f"cmr-fusion {__version__}" in out
    bench = out.split("usage: cmr-fusion bench", 1)[1]
    assert all(f"  {b} " in bench.split("positional arguments")[0] for b in ("memory", "offline", "pipeline"))


def test_process_takes_params_file_and_params(tmp_path):
    """`--params-file` as ROS users type it; `--params` (the old spelling) still works."""
    from pathlib import Path

    bag = Path(__file__).resolve().parents[2] / "bags" / "sample_town" / "session_00"
    params = tmp_path / "p.yaml"
    params.write_text("fusion_node:\n  ros__parameters:\n    streams: {camera: {enabled: false}, radar: {enabled: false}}"
                      "\n    limits: {max_points: 1}\n")  # every scan rejected: fast, and proves the file was read
    for flag in ("--params-file", "--params"):
        out = tmp_path / flag.strip("-")
        assert main(["process", str(bag), "--out", str(out), flag, str(params), "--no-progress"]) == 0
        summary = __import__("json").loads((out / "summary.json").read_text())
        assert summary["frames"] == {"lidar": 0} and summary["bad_messages"] == 300
