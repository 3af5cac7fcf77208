"""bench offline: the encoder wrapper against a bare onnxruntime session (same outputs, figures filled in), the
real-time factor of processing a small bag, and a smoke run of the command with its report."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnx")

from cmr_fusion_ros.core.config import FusionConfig  # noqa: E402
from cmr_fusion_ros.core.encoder import model_path  # noqa: E402
from cmr_fusion_ros.core.types import Modality  # noqa: E402
from cmr_fusion_ros.eval.bench_offline import encoder_overhead, realtime_factor  # noqa: E402
from tests.bench_tiny_models import write_tiny_models  # noqa: E402
from tests.unit.test_offline import write_bag  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    """LiDAR + radar + odometry, 8 s: places 0..5, then a return to place 2."""
    bag = tmp_path_factory.mktemp("bag") / "drive"
    write_bag(bag, [(t, t, 10.0 * t) for t in range(6)] + [(6.0, 2, 21.5), (8.0, 8, 300.0)])
    return bag


def test_encoder_overhead_same_outputs_and_filled_figures(models, small_bag):
    res = encoder_overhead(model_path(models, Modality.LIDAR), batch=2, iterations=12, warmup=2, bag=small_bag)
    assert res.modality == "lidar" and res.batch == 2 and res.iterations == 12
    assert "frames of" in res.inputs  # the bag's own clouds, preprocessed by the card
    assert res.max_abs_diff < 1e-5  # the wrapper returns the bare output, L2-normalised
    for side in (res.wrapper_ms, res.bare_ms):
        assert 0 < side["min"] <= side["p50"] <= side["p99"]
    assert res.ratio_p50 == pytest.approx(res.wrapper_ms["p50"] / res.bare_ms["p50"])


def test_encoder_overhead_without_a_bag_uses_seeded_noise(models):
    res = encoder_overhead(model_path(models, Modality.RADAR), iterations=5, warmup=0)
    assert res.inputs.startswith("seeded normal noise") and res.max_abs_diff < 1e-5


def test_realtime_factor_of_a_small_bag(models, small_bag):
    cfg = FusionConfig.from_dict({"streams": {"camera": {"enabled": False}},
                                  "encoders": {"models_dir": str(models)},
                                  "memory": {"persistence": {"directory": ""}}})
    run = realtime_factor([small_bag], cfg)
    assert run.messages == 24 and run.frames == 16 and run.memory_entries > 0
    assert run.bag_duration_s == pytest.approx(8.0, abs=0.01)
    assert run.realtime_factor == pytest.approx(run.bag_duration_s / run.wall_s)
    assert run.cpu_s > 0 and len(run.loadavg_before) == 3


def test_bench_offline_command_smoke(models, small_bag, tmp_path, capsys):
    from cmr_fusion_ros.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("fusion_node:\n  ros__parameters:\n    streams:\n      camera:\n        enabled: false\n")
    rc = main(["bench", "offline", str(small_bag), "--models", str(models), "--params", str(params),
               "--iterations", "5", "--repeats", "2", "--json", str(tmp_path / "off.json"),
               "--plot", str(tmp_path / "off.png")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "offline real-time factor" in out and "encoder wrapper / bare onnxruntime" in out
    report = json.loads((tmp_path / "off.json").read_text())
    assert report["command"].startswith("cmr-fusion bench offline") and "--look-ahead 32" in report["command"]
    assert len(report["figures"]["process"]) == 2
    assert {e["modality"] for e in report["figures"]["encoders"]} == {"lidar", "radar"}
    assert "load average" in (tmp_path / "off.md").read_text()
    assert (tmp_path / "off.png").stat().st_size > 1000


def test_cpu_seconds_count_ended_children():
    """The look-ahead's worker processes are children: their CPU time counts once they have ended."""
    import subprocess
    import sys

    from cmr_fusion_ros.eval.bench_offline import _cpu_s

    before = _cpu_s()
    out = subprocess.run([sys.executable, "-c", "import os\nsum(range(4_000_000))\nt = os.times()\n"
                          "print(t.user + t.system)"], capture_output=True, text=True, check=True).stdout
    assert _cpu_s() - before >= 0.9 * float(out)
