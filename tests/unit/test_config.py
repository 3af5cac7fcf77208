"""FusionConfig: every shipped parameter file loads; bad values name the key; the parameter table is complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cmr_fusion_ros.core.config import (
    PARAMETERS,
    FusionConfig,
    InputLimits,
    flatten,
    load_parameter_file,
    render_parameter_file,
    unflatten,
)
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.types import Modality

CONFIG = Path(__file__).resolve().parents[2] / "config"
NODE_OWN = ("modality", "output_topic", "input_topic")


def node_files():
    for path in sorted(CONFIG.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and all(isinstance(v, dict) and "ros__parameters" in v for v in data.values()):
            for node in data:
                yield path, node


def test_there_are_parameter_files():
    assert {p.name for p, _ in node_files()} >= {"fusion.yaml", "split.yaml"}


@pytest.mark.parametrize("path, node", list(node_files()), ids=lambda x: str(getattr(x, "name", x)))
def test_every_shipped_parameter_file_loads(path, node):
    params = load_parameter_file(path, node)
    cfg = FusionConfig.from_dict({k: v for k, v in params.items() if k not in NODE_OWN}, source=str(path))
    assert cfg.enabled_modalities
    if "modality" in params:
        assert Modality.parse(params["modality"]) in cfg.enabled_modalities


def test_every_config_key_has_a_description():
    assert set(flatten(FusionConfig().to_dict())) == {p.name for p in PARAMETERS}


def test_fusion_yaml_documents_every_parameter():
    flat = flatten(load_parameter_file(CONFIG / "fusion.yaml", "fusion_node"))
    assert set(flat) == {p.name for p in PARAMETERS}
    text = (CONFIG / "fusion.yaml").read_text()
    assert all(p.description.split("(")[0].strip()[:20] in text for p in PARAMETERS)


def test_round_trips():
    cfg = FusionConfig.from_dict({"policy": {"top_k": 3, "routes": {"radar": ["lidar"]}},
                                  "streams": {"camera": {"transport": "raw", "topic": "cam/image_raw"}}})
    assert FusionConfig.from_dict(cfg.to_dict()) == cfg
    assert FusionConfig.from_dict(unflatten(flatten(cfg.to_dict()))) == cfg
    rendered = yaml.safe_load(render_parameter_file({"n": cfg.to_dict()}))
    assert FusionConfig.from_dict(rendered["n"]["ros__parameters"]) == cfg
    assert cfg.policy.targets(Modality.RADAR) == (Modality.LIDAR,) and cfg.policy.targets(Modality.CAMERA) == ()


@pytest.mark.parametrize(
    "d, key, pattern",
    [
        ({"policy": {"top_k": 0}}, "policy.top_k", r"got 0; allowed: an integer in \[1, 1000\]"),
        ({"policy": {"min_score": "high"}}, "policy.min_score", "got 'high'"),
        ({"memory": {"index": {"backend": "annoy"}}}, "memory.index.backend", "exact | faiss_flat"),
        ({"streams": {"camera": {"transport": "h264"}}}, "streams.camera.transport", "compressed | raw"),
        ({"streams": {"lidar": {"topic": ""}}}, "streams.lidar.topic", "a topic name"),
        ({"streams": {"sonar": {}}}, "streams.sonar", "a known key"),
        ({"sync": {"tolerance_s": 0.05}}, "sync.tolerance_s", "a known key"),  # frame sets are gone
        ({"encoders": {"providers": ["OpenVINO"]}}, "encoders.providers", "CPUExecutionProvider"),
        ({"polcy": {}}, "polcy", "a known key"),
        ({"streams": {m.value: {"enabled": False} for m in Modality}}, "streams", "at least one enabled stream"),
        ({"limits": {"max_points": 0}}, "limits.max_points", r"got 0; allowed: an integer in \[1, 2147483647\]"),
        ({"limits": {"max_image_pixels": "4k"}}, "limits.max_image_pixels", "got '4k'"),
        ({"limits": {"max_message_bytes": 2**31}}, "limits.max_message_bytes", "got 2147483648"),
        ({"limits": {"max_points": 1.5e6}}, "limits.max_points", "got 1500000.0; allowed: an integer"),
        ({"limits": {"max_bytes": 10}}, "limits.max_bytes", "a known key"),
        ({"limits": 5}, "limits", "a mapping"),
        ({"sync": {"time_jump_s": -1}}, "sync.time_jump_s", r"got -1.0; allowed: a number in \[0.0, 86400.0\]"),
        ({"sync": {"time_jump_s": "auto"}}, "sync.time_jump_s", "got 'auto'"),
    ],
)
def test_bad_values_name_the_key(d, key, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        FusionConfig.from_dict(d, source="my.yaml")
    assert info.value.key == key and "my.yaml" in str(info.value)


def test_parameter_file_errors(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("other_node:\n  ros__parameters: {}\n")
    with pytest.raises(ConfigError, match="a section for node 'fusion_node'"):
        load_parameter_file(f, "fusion_node")
    f.write_text("fusion_node: {ros__parameters: {policy: {top_k: -3}}}\n")
    with pytest.raises(ConfigError, match=r"policy.top_k.*p\.yaml.*got -3"):
        FusionConfig.from_yaml(f, "fusion_node")
    f.write_text("/**:\n  ros__parameters:\n    policy: {top_k: 4}\n")
    assert FusionConfig.from_yaml(f, "fusion_node").policy.top_k == 4
    with pytest.raises(ConfigError, match="params_file"):
        load_parameter_file(tmp_path / "missing.yaml")


def test_limits_and_time_jump_defaults_and_overrides():
    from cmr_fusion_ros.core.pipeline import DEFAULT_LIMITS

    cfg = FusionConfig()
    assert cfg.limits == DEFAULT_LIMITS == InputLimits(4096 * 4096, 2_000_000, 256 * 1024 * 1024)
    assert cfg.sync.time_jump_s == 0.0 and cfg.sync.jump_back_ns == 1_000_000_000  # automatic: 1 s
    cfg = FusionConfig.from_dict({"limits": {"max_points": 10}, "sync": {"time_jump_s": 3}})  # int for a float
    assert cfg.limits == InputLimits(max_points=10) and cfg.sync.time_jump_s == 3.0
    assert cfg.sync.jump_back_ns == 3 * 10**9
    assert FusionConfig.from_dict(unflatten(flatten(cfg.to_dict()))) == cfg
    assert FusionConfig.from_dict({"sync": {"time_jump_s": 0.56}}).sync.jump_back_ns == 560_000_000


def test_limits_and_time_jump_are_read_only_parameters():
    specs = {p.name: p for p in PARAMETERS}
    for name in ("limits.max_image_pixels", "limits.max_points", "limits.max_message_bytes", "sync.time_jump_s"):
        assert specs[name].read_only and specs[name].min is not None
    split = yaml.safe_load((CONFIG / "split.yaml").read_text())
    for node in ("camera_encoder", "lidar_encoder", "radar_encoder"):  # they decode: limits, no sync
        assert set(split[node]["ros__parameters"]["limits"]) == set(InputLimits.KEYS)
    assert "limits" not in split["memory_node"]["ros__parameters"]  # embeddings only: no sensor messages
    assert split["memory_node"]["ros__parameters"]["sync"]["time_jump_s"] == 0.0
