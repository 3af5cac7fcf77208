"""Per-session sensor rigs in the simulator: seeded draws within the configured ranges, written into the bag."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.cli import main
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.sim.config import RigDrawConfig, SimConfig, load_sim_config
from cmr_fusion_ros.sim.rig import draw_rig, rig_summary
from tests.unit.test_sim_bags import _read_all

ROOT = Path(__file__).resolve().parents[2]
DRAW = dataclasses.replace(SimConfig(), rig=RigDrawConfig(draw=True))

# a small town, small sensor ranges and low rates so a drawn-rig session stays quick
SMALL = """
camera: {rate_hz: 2.0}
lidar: {rate_hz: 2.0}
radar: {rate_hz: 2.0, ray_step_deg: 1.0}
odom: {rate_hz: 10.0}
town: {blocks_x: 3, blocks_y: 3, block_min: 30.0, block_max: 34.0, moving_cars: 3, pedestrians: 4}
route: {loop_blocks_x: 1, loop_blocks_y: 1}
rig: {draw: true, camera_width: [96, 160], lidar_beams: [8, 16], lidar_columns: [90, 180]}
"""


def test_no_draw_keeps_the_config() -> None:
    assert draw_rig(SimConfig(), 3, 1) is not None and draw_rig(SimConfig(), 3, 1) == SimConfig()


def test_draws_are_seeded_per_session_and_within_the_ranges() -> None:
    r = DRAW.rig
    assert draw_rig(DRAW, 5, 0) == draw_rig(DRAW, 5, 0)
    assert draw_rig(DRAW, 5, 0) != draw_rig(DRAW, 5, 1) and draw_rig(DRAW, 5, 0) != draw_rig(DRAW, 6, 0)
    beams, cols = set(), set()
    for seed in range(40):
        c = draw_rig(DRAW, seed, seed % 3)
        cam, lid, rad = c.camera, c.lidar, c.radar
        assert r.camera_width[0] <= cam.width <= r.camera_width[1] and cam.width % 8 == 0
        assert r.camera_aspect[0] - 0.02 <= cam.width / cam.height <= r.camera_aspect[1] + 0.02
        assert 60 <= cam.hfov_deg <= 120 and 1.2 <= cam.translation[2] <= 2.0
        assert lid.beams in (16, 32, 64, 128) and lid.columns in (512, 1024, 2048)
        assert -30 <= lid.vfov_min_deg <= -15 and 2 <= lid.vfov_max_deg <= 22 and 1.4 <= lid.translation[2] <= 2.4
        assert 60 <= rad.hfov_deg <= 120 and 48 <= rad.max_points <= 256
        scale = rad.range_noise_std / SimConfig().radar.range_noise_std
        assert 0.5 - 1e-3 <= scale <= 2.0 + 1e-3
        assert rad.doppler_noise_std == pytest.approx(SimConfig().radar.doppler_noise_std * scale, rel=2e-2)
        assert (c.town, c.route, c.odom) == (DRAW.town, DRAW.route, DRAW.odom)  # only the sensors change
        beams.add(lid.beams)
        cols.add(lid.columns)
    assert beams == {16, 32, 64, 128} and cols == {512, 1024, 2048}
    s = rig_summary(draw_rig(DRAW, 1, 0))
    assert set(s) == {"camera", "lidar", "radar"} and len(s["lidar"]["translation"]) == 3


def test_rig_section_in_yaml(tmp_path: Path) -> None:
    assert load_sim_config(ROOT / "config" / "sim_default.yaml").rig == RigDrawConfig()  # documented defaults
    f = tmp_path / "r.yaml"
    f.write_text("rig: {draw: true, lidar_beams: [16, 64], camera_hfov_deg: [70, 80]}\n")
    cfg = load_sim_config(f)
    assert cfg.rig.draw and cfg.rig.lidar_beams == (16.0, 64.0) and draw_rig(cfg, 0, 0).lidar.beams in (16, 64)
    for text, key in (("rig: {camera_hfov_deg: [100, 60]}\n", "rig.camera_hfov_deg"),
                      ("rig: {lidar_beams: [16.5]}\n", "rig.lidar_beams"),
                      ("rig: {lidar_vfov_min_deg: [-20, 5], lidar_vfov_max_deg: [2, 10]}\n", "rig.lidar_vfov_max_deg"),
                      ("rig: {draw: 1}\n", "rig.draw"),
                      ("rig: {camera_width: [100]}\n", "rig.camera_width")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_sim_config(f)


def test_drawn_rigs_are_written_into_the_bags(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--config", str(cfg), "--seed", "4", "--duration", "3",
                 "--sessions", "2", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("  rig: camera ") == 2
    town = json.loads((out / "town.json").read_text())
    rigs = [s["rig"] for s in town["sessions"]]
    assert rigs[0] != rigs[1]
    for k, rig in enumerate(rigs):
        msgs = _read_all(out / f"session_{k:02d}")
        statics = {t.child_frame_id: t.transform.translation for t in msgs["/tf_static"][0][1].transforms}
        for frame, sensor in (("camera_optical_frame", "camera"), ("lidar", "lidar"), ("radar", "radar")):
            t = statics[frame]
            assert [t.x, t.y, t.z] == pytest.approx(rig[sensor]["translation"])
        info = msgs["/camera/camera_info"][0][1]
        assert (info.width, info.height) == (rig["camera"]["width"], rig["camera"]["height"])
        hfov = math.degrees(2 * math.atan(info.width / (2 * info.k[0])))
        assert hfov == pytest.approx(rig["camera"]["hfov_deg"], abs=1e-6)
        from cmr_fusion_ros.core.image import decode_compressed
        from cmr_fusion_ros.core.pointcloud import decode_cloud

        img = decode_compressed(msgs["/camera/image/compressed"][0][1], "rgb8")
        assert img.shape[:2] == (info.height, info.width)
        cloud = decode_cloud(msgs["/lidar/points"][0][1])
        assert int(cloud["ring"].max()) < rig["lidar"]["beams"] and len(cloud) <= 16 * 180
        elev = np.degrees(np.arctan2(cloud["z"], np.hypot(cloud["x"], cloud["y"])))
        assert elev.min() >= rig["lidar"]["vfov_min_deg"] - 1.0 and elev.max() <= rig["lidar"]["vfov_max_deg"] + 1.0
        assert len(decode_cloud(msgs["/radar/points"][0][1])) <= rig["radar"]["max_points"]
    # the same command again: the same rigs
    assert main(["simulate", "--out", str(tmp_path / "again"), "--config", str(cfg), "--seed", "4", "--duration", "3",
                 "--sessions", "2", "--no-progress"]) == 0
    assert [s["rig"] for s in json.loads((tmp_path / "again" / "town.json").read_text())["sessions"]] == rigs
    # --draw-rigs switches the draws on for a config without them
    cfg.write_text(SMALL.replace("draw: true", "draw: false"))
    assert main(["simulate", "--out", str(tmp_path / "flag"), "--config", str(cfg), "--seed", "4", "--duration", "1",
                 "--sessions", "1", "--no-progress", "--draw-rigs"]) == 0
    assert "--draw-rigs" in capsys.readouterr().out
    assert json.loads((tmp_path / "flag" / "town.json").read_text())["sessions"][0]["rig"] == rigs[0]
