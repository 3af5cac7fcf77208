"""FusionConfig: every shipped parameter file loads; bad values name the key; the parameter table is complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cmr_fusion_ros.core.config import (
    PARAMETERS,
    FusionConfig,
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
        ({"sync": {"tolerance_s": 0.5, "timeout_s": 0.1}}, "sync.timeout_s", r">= sync.tolerance_s"),
        ({"encoders": {"providers": ["OpenVINO"]}}, "encoders.providers", "CPUExecutionProvider"),
        ({"polcy": {}}, "polcy", "a known key"),
        ({"streams": {m.value: {"enabled": False} for m in Modality}}, "streams", "at least one enabled stream"),
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
