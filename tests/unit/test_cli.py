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
