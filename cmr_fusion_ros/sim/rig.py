"""Per-session sensor rigs: :func:`draw_rig` turns a :class:`SimConfig` whose ``rig.draw`` is on into the config of one
session, with its camera (resolution, field of view, mount), LiDAR (beams, columns, vertical field of view, mount)
and radar (field of view, point budget, noise, mount) drawn from the ``rig`` ranges. A pure function of (seed,
session, config): the same inputs give the same rig on every machine."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cmr_fusion_ros.sim.config import SimConfig

__all__ = ["draw_rig", "rig_summary"]


def draw_rig(config: SimConfig, seed: int, session: int) -> SimConfig:
    """The session's config: ``config`` itself when ``rig.draw`` is off, else with drawn camera/LiDAR/radar."""
    r = config.rig
    if not r.draw:
        return config
    rng = np.random.default_rng([int(seed), int(session), 19])

    def u(lo_hi: tuple[float, float]) -> float:
        return float(rng.uniform(lo_hi[0], lo_hi[1]))

    width = max(16, int(round(u(r.camera_width) / 8.0)) * 8)
    height = max(16, int(round(width / u(r.camera_aspect) / 2.0)) * 2)
    camera = dataclasses.replace(config.camera, width=width, height=height, hfov_deg=round(u(r.camera_hfov_deg), 2),
                                 translation=(round(u(r.camera_x_m), 3), round(u(r.camera_y_m), 3),
                                              round(u(r.camera_z_m), 3)))
    lidar = dataclasses.replace(config.lidar, beams=int(rng.choice(r.lidar_beams)),
                                columns=int(rng.choice(r.lidar_columns)),
                                vfov_min_deg=round(u(r.lidar_vfov_min_deg), 2),
                                vfov_max_deg=round(u(r.lidar_vfov_max_deg), 2),
                                translation=(round(u(r.lidar_x_m), 3), 0.0, round(u(r.lidar_z_m), 3)))
    noise = u(r.radar_noise_scale)
    radar = dataclasses.replace(config.radar, hfov_deg=round(u(r.radar_hfov_deg), 2),
                                max_points=int(round(u(r.radar_max_points))),
                                range_noise_std=round(config.radar.range_noise_std * noise, 4),
                                azimuth_noise_std_deg=round(config.radar.azimuth_noise_std_deg * noise, 4),
                                doppler_noise_std=round(config.radar.doppler_noise_std * noise, 4),
                                translation=(round(u(r.radar_x_m), 3), 0.0, round(u(r.radar_z_m), 3)))
    return dataclasses.replace(config, camera=camera, lidar=lidar, radar=radar)


def rig_summary(config: SimConfig) -> dict[str, Any]:
    """The sensor values a rig draw sets (for ``town.json`` and the simulate command's output)."""
    c, lid, rad = config.camera, config.lidar, config.radar
    return {
        "camera": {"width": c.width, "height": c.height, "hfov_deg": c.hfov_deg, "translation": list(c.translation)},
        "lidar": {"beams": lid.beams, "columns": lid.columns, "vfov_min_deg": lid.vfov_min_deg,
                  "vfov_max_deg": lid.vfov_max_deg, "translation": list(lid.translation)},
        "radar": {"hfov_deg": rad.hfov_deg, "max_points": rad.max_points, "range_noise_std": rad.range_noise_std,
                  "azimuth_noise_std_deg": rad.azimuth_noise_std_deg, "doppler_noise_std": rad.doppler_noise_std,
                  "translation": list(rad.translation)},
    }
