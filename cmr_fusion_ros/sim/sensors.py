"""Sensor models rendered by ray casting into a :class:`~cmr_fusion_ros.sim.world.SessionWorld`.

Frames (REP 103 / REP 105): base_link x forward, y left, z up, on the ground under the vehicle centre. LiDAR and radar
frames are parallel to base_link; the camera publishes in ``camera_optical_frame`` (z forward, x right, y down).
All sensors are instantaneous (no rolling shutter, no LiDAR motion distortion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr_fusion_ros.sim.config import CameraConfig, LidarConfig, RadarConfig
from cmr_fusion_ros.sim.geometry import RigidTransform, rot_z
from cmr_fusion_ros.sim.route import EgoState
from cmr_fusion_ros.sim.town import MATERIALS, Material
from cmr_fusion_ros.sim.world import SessionWorld

__all__ = [
    "CAMERA_FRAME",
    "LIDAR_FRAME",
    "LIDAR_DTYPE",
    "RADAR_DTYPE",
    "RADAR_FRAME",
    "CameraModel",
    "LidarModel",
    "RadarModel",
    "base_pose",
    "optical_rotation",
]

LIDAR_FRAME = "lidar"
RADAR_FRAME = "radar"
CAMERA_FRAME = "camera_optical_frame"

LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<u2")])
RADAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("doppler", "<f4"), ("rcs", "<f4")])


def optical_rotation() -> np.ndarray:
    """Rotation of camera_optical_frame axes expressed in base_link: columns x_opt=-y, y_opt=-z, z_opt=+x."""
    return np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def _rotate(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """rotation @ v for each row v (float32). einsum, not BLAS: a multi-threaded BLAS call leaves OpenBLAS threads
    spinning, which on a 2-core machine steals the CPU from open3d's ray casting (measured: 3x slower frames)."""
    return np.einsum("ij,kj->ik", vectors, rotation.astype(np.float32))


def base_pose(state: EgoState) -> RigidTransform:
    """odom <- base_link."""
    return RigidTransform(rot_z(state.yaw), np.array([state.x, state.y, 0.0]))


def sensor_velocity(state: EgoState, mount: np.ndarray) -> np.ndarray:
    """World velocity of a point fixed at `mount` (base_link coordinates) on the ego vehicle."""
    r = rot_z(state.yaw) @ mount
    omega = np.array([0.0, 0.0, state.yaw_rate])
    return state.velocity + np.cross(omega, r)


@dataclass
class CameraModel:
    config: CameraConfig

    def __post_init__(self) -> None:
        c = self.config
        fx, fy, cx, cy = c.intrinsics
        u, v = np.meshgrid(np.arange(c.width, dtype=np.float64), np.arange(c.height, dtype=np.float64))
        d = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1).reshape(-1, 3)
        self.dirs_optical = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
        self._noise_bank = np.random.default_rng(0x5EED).standard_normal(2 * len(d) * 3, dtype=np.float32)

    def _mover_pixels(self, boxes: np.ndarray, pose: RigidTransform) -> np.ndarray | None:
        """Flat indices of the pixels inside the movers' projected bounding boxes (None: cast every pixel)."""
        c = self.config
        if len(boxes) == 0:
            return np.zeros(0, dtype=np.int64)
        sel = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]])
        corners = boxes[:, sel, [0, 1, 2]]  # (K, 8, 3)
        cam = np.einsum("kni,ij->knj", corners - pose.translation, pose.rotation)  # world -> optical
        z = cam[..., 2]
        if ((z.min(axis=1) <= 0.05) & (z.max(axis=1) > 0.05)).any():
            return None  # a box straddles the image plane: no bound from its corners
        fx, fy, cx, cy = c.intrinsics
        mask = np.zeros((c.height, c.width), dtype=bool)
        for k in np.nonzero(z.min(axis=1) > 0.05)[0]:
            u = fx * cam[k, :, 0] / z[k] + cx
            v = fy * cam[k, :, 1] / z[k] + cy
            u0, u1 = int(max(np.floor(u.min()) - 1, 0)), int(min(np.ceil(u.max()) + 2, c.width))
            v0, v1 = int(max(np.floor(v.min()) - 1, 0)), int(min(np.ceil(v.max()) + 2, c.height))
            if u0 < u1 and v0 < v1:
                mask[v0:v1, u0:u1] = True
        return np.flatnonzero(mask)

    @property
    def extrinsic(self) -> RigidTransform:
        """base_link <- camera_optical_frame."""
        return RigidTransform(optical_rotation(), np.asarray(self.config.translation, dtype=float))

    @property
    def K(self) -> np.ndarray:
        fx, fy, cx, cy = self.config.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    def render(self, world: SessionWorld, state: EgoState, rng: np.random.Generator) -> np.ndarray:
        """An RGB uint8 image (H, W, 3)."""
        c = self.config
        pose = base_pose(state).compose(self.extrinsic)
        dirs = _rotate(self.dirs_optical, pose.rotation)
        origins = np.broadcast_to(pose.translation.astype(np.float32), dirs.shape)
        candidates = self._mover_pixels(world.mover_boxes(state.t, (state.x, state.y)), pose)
        hits = world.cast(origins, dirs, state.t, (state.x, state.y), dynamic_candidates=candidates)
        light = world.lighting
        img = _sky(dirs, light)
        idx = hits.index
        if len(idx):
            albedo, _ = world.surface(hits)
            n = hits.normal
            sun = np.asarray(light.sun_direction, dtype=np.float32)
            lambert = np.einsum("ij,j->i", n, sun)
            np.clip(lambert, 0.0, None, out=lambert)
            if light.shadows:
                li = np.nonzero(lambert > 0)[0]
                if len(li):
                    o = hits.points[li] + n[li] * np.float32(0.05)
                    blocked = world.cast(o, np.broadcast_to(sun, o.shape), state.t, (state.x, state.y), any_hit=True)
                    lambert[li[blocked]] = 0.0
            # a little sky light from above so vertical walls facing away from the sun still differ
            sky = np.float32(light.sky_light)
            ambient = np.asarray(light.ambient, dtype=np.float32) * ((1 - sky) + sky * np.abs(n[:, 2:3]))
            shaded = albedo * (ambient + lambert[:, None] * np.asarray(light.sun_colour, dtype=np.float32))
            fog = np.exp(-hits.t[idx] / np.float32(light.fog_distance))[:, None]
            img[idx] = shaded * fog + img[idx] * (1 - fog)
        img *= np.float32(255.0)
        if c.noise_std > 0:
            # a window of a per-camera bank of N(0, 1) draws at a random offset: as good as fresh noise, far cheaper
            n = img.size
            off = int(rng.integers(0, len(self._noise_bank) - n))
            img += self._noise_bank[off:off + n].reshape(img.shape) * np.float32(c.noise_std)
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8).reshape(c.height, c.width, 3)


def _sky(dirs: np.ndarray, light) -> np.ndarray:
    up = np.sqrt(np.clip(dirs[:, 2], 0.0, 1.0))[:, None]
    zen = np.asarray(light.sky_zenith, dtype=np.float32)
    hor = np.asarray(light.sky_horizon, dtype=np.float32)
    return hor + (zen - hor) * up


@dataclass
class LidarModel:
    config: LidarConfig

    def __post_init__(self) -> None:
        c = self.config
        el = np.radians(np.linspace(c.vfov_min_deg, c.vfov_max_deg, c.beams))
        az = np.linspace(np.pi, -np.pi, c.columns, endpoint=False)  # starts behind, sweeps clockwise seen from above
        A, E = np.meshgrid(az, el, indexing="ij")  # (columns, beams): column-major like a spinning sensor
        self.dirs_sensor = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3).astype(np.float32)
        self.ring = np.broadcast_to(np.arange(c.beams, dtype=np.uint16), (c.columns, c.beams)).reshape(-1)

    @property
    def extrinsic(self) -> RigidTransform:
        """base_link <- lidar."""
        return RigidTransform(np.eye(3), np.asarray(self.config.translation, dtype=float))

    def render(self, world: SessionWorld, state: EgoState, rng: np.random.Generator) -> np.ndarray:
        """Structured points (x, y, z, intensity, ring) in the lidar frame; only returns (no NaNs)."""
        c = self.config
        pose = base_pose(state).compose(self.extrinsic)
        dirs = _rotate(self.dirs_sensor, pose.rotation)
        origins = np.broadcast_to(pose.translation.astype(np.float32), dirs.shape)
        hits = world.cast(origins, dirs, state.t, (state.x, state.y))
        th = hits.t[hits.index]
        valid = (th >= c.min_range) & (th <= c.max_range)
        idx = hits.index[valid]
        _, refl = world.surface(hits)
        refl = refl[valid]
        cos_inc = np.abs(np.einsum("ij,ij->i", hits.normal[valid], dirs[idx]))
        keep = rng.random(len(idx)) >= c.dropout
        # dark glass and grazing hits return less often
        keep &= rng.random(len(idx)) < np.clip(0.4 + 4.0 * refl * cos_inc, 0.0, 1.0)
        idx, refl, cos_inc = idx[keep], refl[keep], cos_inc[keep]
        r = hits.t[idx] + rng.normal(0.0, c.range_noise_std, len(idx)).astype(np.float32)
        intensity = np.clip(255.0 * refl * (0.3 + 0.7 * cos_inc) + rng.normal(0, 2.0, len(idx)), 0, 255)
        out = np.empty(len(idx), dtype=LIDAR_DTYPE)
        d = self.dirs_sensor[idx]
        out["x"], out["y"], out["z"] = (d * r[:, None]).T
        out["intensity"] = intensity
        out["ring"] = self.ring[idx]
        return out


@dataclass
class RadarModel:
    config: RadarConfig

    def __post_init__(self) -> None:
        c = self.config
        naz = int(round(c.hfov_deg / c.ray_step_deg)) + 1
        nel = max(3, int(round(c.vfov_deg / 2.0)) + 1)
        az = np.radians(np.linspace(-c.hfov_deg / 2, c.hfov_deg / 2, naz))
        el = np.radians(np.linspace(-c.vfov_deg / 2, c.vfov_deg / 2, nel))
        A, E = np.meshgrid(az, el, indexing="ij")
        self.az = A.reshape(-1)
        self.el = E.reshape(-1)
        self.dirs_sensor = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3).astype(np.float32)
        self._rcs = np.array([MATERIALS[Material(m)].radar_rcs_dbsm for m in range(len(Material))], dtype=np.float32)
        self._spec = np.array([MATERIALS[Material(m)].radar_specular for m in range(len(Material))], dtype=np.float32)

    @property
    def extrinsic(self) -> RigidTransform:
        """base_link <- radar."""
        return RigidTransform(np.eye(3), np.asarray(self.config.translation, dtype=float))

    def render(self, world: SessionWorld, state: EgoState, rng: np.random.Generator) -> np.ndarray:
        """Structured detections (x, y, z, doppler, rcs) in the radar frame.

        doppler is the radial velocity (m/s, positive = moving away) of the target relative to the sensor:
        (v_target - v_sensor) · u, with u the unit ray from the sensor to the target. rcs is in dBsm.
        """
        c = self.config
        pose = base_pose(state).compose(self.extrinsic)
        dirs_w = _rotate(self.dirs_sensor, pose.rotation)
        origins = np.broadcast_to(pose.translation.astype(np.float32), dirs_w.shape)
        hits = world.cast(origins, dirs_w, state.t, (state.x, state.y))
        v_sensor = sensor_velocity(state, np.asarray(c.translation, dtype=float))
        th = hits.t[hits.index]
        valid = (th <= c.max_range) & (th > 0.5)
        idx = hits.index[valid]
        obj = hits.object[valid]
        mat = world.material[obj]
        cos_inc = np.abs(np.einsum("ij,ij->i", hits.normal[valid], dirs_w[idx]))
        rcs = self._rcs[mat] + 10.0 * np.log10(np.clip(cos_inc, 1e-3, 1.0) ** self._spec[mat])
        rcs = rcs + rng.normal(0.0, 1.5, len(idx))  # fluctuation (Swerling-like)
        r_true = hits.t[idx]
        snr = rcs - 40.0 * np.log10(np.maximum(r_true, 1.0) / 10.0)
        # one detection per (azimuth cell, range cell): the strongest
        az_cell = np.floor((self.az[idx] + np.radians(c.hfov_deg / 2)) / np.radians(c.azimuth_resolution_deg)).astype(np.int64)
        r_cell = np.floor(r_true / c.range_resolution).astype(np.int64)
        key = az_cell * 100000 + r_cell
        order = np.lexsort((-snr, key))
        first = np.ones(len(order), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        sel = order[first]
        sel = sel[snr[sel] > c.detection_threshold_db]
        if len(sel) > c.max_points:
            sel = sel[np.argsort(-snr[sel], kind="stable")[: c.max_points]]
        sel = np.sort(sel)
        gi = idx[sel]
        u = dirs_w[gi].astype(np.float64)
        v_target = world.velocity[obj[sel]].astype(np.float64)
        doppler = np.einsum("ij,ij->i", v_target - v_sensor, u)
        n = len(gi)
        r = r_true[sel] + rng.normal(0.0, c.range_noise_std, n)
        az = self.az[gi] + np.radians(rng.normal(0.0, c.azimuth_noise_std_deg, n))
        el = self.el[gi]
        det = np.empty(n, dtype=RADAR_DTYPE)
        det["x"] = r * np.cos(el) * np.cos(az)
        det["y"] = r * np.cos(el) * np.sin(az)
        det["z"] = r * np.sin(el)
        det["doppler"] = doppler + rng.normal(0.0, c.doppler_noise_std, n)
        det["rcs"] = rcs[sel]
        # false alarms: uniform in range and azimuth, random doppler, weak
        nfa = int(rng.poisson(c.false_alarms_per_scan))
        fa = np.empty(nfa, dtype=RADAR_DTYPE)
        if nfa:
            fr = rng.uniform(2.0, c.max_range * 0.7, nfa)
            faz = np.radians(rng.uniform(-c.hfov_deg / 2, c.hfov_deg / 2, nfa))
            fa["x"], fa["y"], fa["z"] = fr * np.cos(faz), fr * np.sin(faz), 0.0
            fa["doppler"] = rng.normal(0.0, 3.0, nfa)
            fa["rcs"] = rng.uniform(-20.0, -5.0, nfa)
        return np.concatenate([det, fa])
