"""Simulator configuration: the shipped YAML files load; bad keys and values name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.sim.config import SimConfig, load_sim_config

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_equals_the_built_in_defaults() -> None:
    assert load_sim_config(ROOT / "config" / "sim_default.yaml") == SimConfig()


def test_training_yaml_only_lowers_the_rates() -> None:
    cfg = load_sim_config(ROOT / "config" / "sim_train.yaml")
    assert cfg.camera.rate_hz == cfg.lidar.rate_hz == cfg.radar.rate_hz == 2.0 and cfg.odom.rate_hz == 10.0
    d = SimConfig()
    assert (cfg.camera.width, cfg.camera.height, cfg.town, cfg.route) == (d.camera.width, d.camera.height, d.town, d.route)


def test_sample_bag_yaml_loads() -> None:
    cfg = load_sim_config(ROOT / "bags" / "sample_town" / "sim_sample.yaml")
    assert cfg.camera.rate_hz == 5.0 and cfg.route.loop_blocks_x == 1


@pytest.mark.parametrize(
    ("yaml_text", "key", "allowed"),
    [
        ("cameraa: {}\n", "cameraa", "one of camera"),
        ("camera: {widht: 3}\n", "camera.widht", "one of rate_hz"),
        ("camera: {width: 0}\n", "camera.width", "> 0"),
        ("camera: {width: 1.5}\n", "camera.width", "an integer"),
        ("camera: {lighting: dark}\n", "camera.lighting", "random | flat"),
        ("camera: {shadows: 1}\n", "camera.shadows", "true or false"),
        ("lidar: {dropout: 1.0}\n", "lidar.dropout", "0 <= dropout < 1"),
        ("lidar: {vfov_min_deg: 20.0, vfov_max_deg: 10.0}\n", "lidar.vfov_max_deg", "vfov_min_deg < vfov_max_deg"),
        ("lidar: {translation: [1, 2]}\n", "lidar.translation", "a list of 3 numbers"),
        ("radar: {rate_hz: -1}\n", "radar.rate_hz", "> 0"),
        ("town: {block_min: 50.0, block_max: 40.0}\n", "town.block_max", "block_max >= block_min"),
        ("route: {loop_blocks_x: 9}\n", "route.loop_blocks_x", "<= town.blocks_x"),
        ("odom: 5\n", "odom", "a mapping"),
    ],
)
def test_bad_values_name_key_value_and_allowed(tmp_path: Path, yaml_text: str, key: str, allowed: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=allowed) as info:
        load_sim_config(p)
    assert info.value.key == key
    assert str(p) in str(info.value)


def test_integer_yaml_values_become_floats_and_partial_sections_keep_defaults(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("camera: {rate_hz: 20}\n")
    cfg = load_sim_config(p)
    assert cfg.camera.rate_hz == 20.0 and isinstance(cfg.camera.rate_hz, float)
    assert cfg.camera.width == SimConfig().camera.width and cfg.lidar == SimConfig().lidar


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable YAML"):
        load_sim_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("camera: [1, 2\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_sim_config(p)
