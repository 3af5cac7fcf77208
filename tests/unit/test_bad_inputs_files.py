"""Bad configuration and files, as a user meets them: each process prints one clear error naming the key or file
and the reason, exits 2, and shows no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmr_fusion_ros.core.encoder import model_path
from cmr_fusion_ros.core.preprocess import CameraPreprocessing
from cmr_fusion_ros.core.types import Modality

REPO = Path(__file__).resolve().parents[2]
BAG = REPO / "bags" / "sample_town" / "session_00"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(argv: list[str], timeout: float = 60.0) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=_env(), timeout=timeout,
                          cwd=REPO)
    return proc.returncode, proc.stdout + proc.stderr


def _node(*params: str) -> tuple[int, str]:
    args = ["-m", "cmr_fusion_ros.ros.fusion_node", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return _run(args)


def _camera_only_models(tmp_path: Path, *, dim: int = 4, corrupt: bool = False, input_name: str | None = None) -> Path:
    pytest.importorskip("onnx")
    from tests.unit.test_encoder import _card, _tiny_model

    folder = tmp_path / "models"
    folder.mkdir()
    pre = CameraPreprocessing(width=16, height=8)
    path = model_path(folder, Modality.CAMERA)
    _tiny_model(path, shape=pre.input_shape, dim=dim)
    card = _card(path, pre, dim=dim)
    if input_name is not None:  # the card no longer describes the graph
        card["input"]["name"] = input_name
        path.with_suffix(".json").write_text(json.dumps(card))
    if corrupt:
        data = bytearray(path.read_bytes())
        data[len(data) // 2:] = b"\0" * (len(data) - len(data) // 2)
        path.write_bytes(bytes(data))
    return folder


def _assert_clear(code: int, out: str, *needles: str) -> None:
    assert code == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for n in needles:
        assert n in out, (n, out[-3000:])


CAMERA_ONLY = ("streams.lidar.enabled:=false", "streams.radar.enabled:=false", "odometry.topic:=''")


@pytest.mark.parametrize("param,needles", [
    ("policy.top_k:=0", ("config key 'policy.top_k'", "got 0", "an integer in [1, 1000]")),
    ("policy.top_k:=abc", ("config key 'policy.top_k'", "got 'abc'")),
    ("sync.time_jump_s:=-1.0", ("config key 'sync.time_jump_s'",)),
    ("memory.index.backend:=annoy", ("config key 'memory.index.backend'", "annoy")),
    ("no_such.key:=1", ("config key 'no_such.key'",)),
], ids=["range", "type", "negative", "choice", "unknown"])
def test_node_bad_parameter_names_the_key_and_exits_2(param, needles):
    _assert_clear(*_node(param), *needles)


def test_node_missing_models(tmp_path):
    _assert_clear(*_node(f"encoders.models_dir:={tmp_path}", *CAMERA_ONLY),
                  f"model {tmp_path}/camera_encoder.onnx: file not found")


def test_node_corrupt_onnx(tmp_path):
    models = _camera_only_models(tmp_path, corrupt=True)
    _assert_clear(*_node(f"encoders.models_dir:={models}", *CAMERA_ONLY, f"memory.persistence.directory:={tmp_path}/m"),
                  "camera_encoder.onnx", "sha256 of the file differs from the card's")


def test_node_card_does_not_match_the_memory(tmp_path):
    models = _camera_only_models(tmp_path, dim=4)
    _assert_clear(*_node(f"encoders.models_dir:={models}", *CAMERA_ONLY, f"memory.persistence.directory:={tmp_path}/m"),
                  "config key 'memory.dim'", "embedding size 4")


def test_node_card_does_not_match_the_graph(tmp_path):
    models = _camera_only_models(tmp_path, input_name="image")
    _assert_clear(*_node(f"encoders.models_dir:={models}", *CAMERA_ONLY, "memory.dim:=4",
                         f"memory.persistence.directory:={tmp_path}/m"),
                  "camera_encoder.onnx", "input is named 'input', the card says 'image'")


def test_node_foreign_and_damaged_memory_directories(tmp_path):
    models = _camera_only_models(tmp_path)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    _assert_clear(*_node(f"encoders.models_dir:={models}", *CAMERA_ONLY, "memory.dim:=4",
                         f"memory.persistence.directory:={foreign}"),
                  f"scene memory {foreign}", "no MANIFEST.json: not a scene memory")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "MANIFEST.json").write_text("{not json")
    _assert_clear(*_node(f"encoders.models_dir:={models}", *CAMERA_ONLY, "memory.dim:=4",
                         f"memory.persistence.directory:={damaged}"),
                  "MANIFEST.json", "unreadable manifest")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _assert_clear(*_node(f"encoders.models_dir:={models}", *CAMERA_ONLY, "memory.dim:=4",
                         f"memory.persistence.directory:={a_file}"),
                  f"scene memory {a_file}: is not a directory")
    assert (foreign / "holiday.jpg").read_bytes() == b"\xff\xd8" and sorted(p.name for p in foreign.iterdir()) == [
        "holiday.jpg"]  # untouched


@pytest.fixture(scope="module")
def truncated_bag(tmp_path_factory) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "truncated"
    bag.mkdir()
    (bag / "metadata.yaml").write_text((BAG / "metadata.yaml").read_text())
    data = (BAG / "session_00.mcap").read_bytes()
    (bag / "session_00.mcap").write_bytes(data[: len(data) // 3])
    return bag


def _camera_params(tmp_path: Path) -> list[str]:
    models = _camera_only_models(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text(json.dumps({"fusion_node": {"ros__parameters": {
        "streams": {"lidar": {"enabled": False}, "radar": {"enabled": False}}, "memory": {"dim": 4}}}}))
    return ["--params", str(params), "--models", str(models)]


def test_process_truncated_bag(tmp_path, truncated_bag):
    _assert_clear(*_run(["-m", "cmr_fusion_ros.cli", "process", str(truncated_bag), "--out", str(tmp_path / "o"),
                         "--no-progress", *_camera_params(tmp_path)]), f"{truncated_bag}: cannot open the bag")


def test_replay_truncated_bag(truncated_bag):
    _assert_clear(*_run(["-m", "cmr_fusion_ros.cli", "replay", str(truncated_bag)]),
                  f"{truncated_bag}: cannot open the bag")


def test_process_missing_bag_and_bad_params_file(tmp_path):
    _assert_clear(*_run(["-m", "cmr_fusion_ros.cli", "process", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                         "--no-progress"]), "no such bag")
    params = tmp_path / "p.yaml"
    params.write_text("fusion_node:\n  ros__parameters:\n    policy: {min_score: 7}\n")
    _assert_clear(*_run(["-m", "cmr_fusion_ros.cli", "process", str(BAG), "--out", str(tmp_path / "o"), "--params",
                         str(params), "--no-progress"]), "config key 'policy.min_score'", str(params))
    params.write_text("fusion_node: [unclosed\n")
    _assert_clear(*_run(["-m", "cmr_fusion_ros.cli", "process", str(BAG), "--out", str(tmp_path / "o"), "--params",
                         str(params), "--no-progress"]), "params_file", "valid YAML")


def test_corrupt_bag_middle_costs_messages_not_the_run(tmp_path):
    """Garbage in the middle of the file: the run ends with a clear error or counts bad messages, never a traceback."""
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text((BAG / "metadata.yaml").read_text())
    data = bytearray((BAG / "session_00.mcap").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = os.urandom(4096)
    (bag / "session_00.mcap").write_bytes(bytes(data))
    code, out = _run(["-m", "cmr_fusion_ros.cli", "process", str(bag), "--out", str(tmp_path / "o"),
                      *_camera_params(tmp_path), "--no-progress"], timeout=300)
    assert "Traceback" not in out, out[-3000:]
    if code == 2:
        assert f"{bag}: " in out and ("unreadable after" in out or "cannot open the bag" in out), out[-2000:]
    else:
        assert code == 0 and "bad messages:" in out, out[-2000:]
