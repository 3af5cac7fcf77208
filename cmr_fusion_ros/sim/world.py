"""One session's world: the static town plus this session's parked cars, traffic, pedestrians and lighting.

The static part goes into one open3d ``RaycastingScene`` built once per session; moving things are rebuilt into a second,
small scene per instant (cached by time). :meth:`SessionWorld.cast` casts against both and returns the nearest hit with
its object id, normal and the object's velocity. :meth:`SessionWorld.surface` resolves what a hit looks like (albedo
for the camera, reflectivity for the LiDAR, glass or not) from the material and the hit position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from cmr_fusion_ros.sim.geometry import box_mesh
from cmr_fusion_ros.sim.town import MATERIALS, PARKING_LANE, Material, Town, car_parts

__all__ = ["Hits", "Lighting", "SessionWorld"]

_CAR_PALETTE = np.array(
    [[0.75, 0.1, 0.1], [0.1, 0.2, 0.6], [0.9, 0.9, 0.9], [0.08, 0.08, 0.08], [0.5, 0.5, 0.55], [0.9, 0.7, 0.1],
     [0.2, 0.5, 0.3], [0.6, 0.6, 0.7], [0.95, 0.45, 0.1]]
)  # fmt: skip
_CLOTHES = np.array(
    [[0.1, 0.1, 0.15], [0.7, 0.1, 0.1], [0.1, 0.3, 0.7], [0.85, 0.85, 0.8], [0.3, 0.5, 0.2], [0.9, 0.6, 0.1],
     [0.5, 0.3, 0.5]]
)  # fmt: skip


@dataclass(frozen=True)
class Lighting:
    sun_direction: tuple[float, float, float]  # unit vector towards the sun (world)
    sun_colour: tuple[float, float, float]
    ambient: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    fog_distance: float
    shadows: bool
    name: str
    sky_light: float = 0.2  # share of the ambient light that comes from above (walls get less than the ground)

    @classmethod
    def flat(cls) -> "Lighting":
        """Ambient white light only: every hit shows its albedo exactly (for tests and debugging)."""
        return cls((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.7, 0.9), (0.8, 0.85, 0.9), float("inf"),
                   False, "flat", 0.0)

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Lighting":
        preset = str(rng.choice(["noon", "morning", "evening", "overcast"]))
        az = rng.uniform(-np.pi, np.pi)
        if preset == "noon":
            el, sun, amb = rng.uniform(50, 70), (1.0, 0.97, 0.9), (0.38, 0.40, 0.45)
            zen, hor, fog = (0.25, 0.45, 0.85), (0.70, 0.80, 0.95), 900.0
        elif preset == "morning":
            el, sun, amb = rng.uniform(15, 30), (1.0, 0.85, 0.65), (0.30, 0.32, 0.40)
            zen, hor, fog = (0.35, 0.50, 0.80), (0.95, 0.80, 0.65), 600.0
        elif preset == "evening":
            el, sun, amb = rng.uniform(8, 20), (0.95, 0.6, 0.35), (0.22, 0.22, 0.32)
            zen, hor, fog = (0.20, 0.25, 0.50), (0.95, 0.55, 0.35), 500.0
        else:
            el, sun, amb = rng.uniform(40, 70), (0.25, 0.25, 0.27), (0.62, 0.62, 0.65)
            zen, hor, fog = (0.60, 0.62, 0.66), (0.78, 0.78, 0.80), 350.0
        el = np.radians(el)
        d = (float(np.cos(el) * np.cos(az)), float(np.cos(el) * np.sin(az)), float(np.sin(el)))
        scale = rng.uniform(0.9, 1.1)
        return cls(d, tuple(float(c * scale) for c in sun), amb, zen, hor, fog, preset != "overcast", preset)


@dataclass
class Hits:
    """Result of casting N rays: `t` for every ray (inf for a miss); the rest only for the hits, in ray order."""

    t: np.ndarray  # (N,) float32
    index: np.ndarray  # (M,) int64: which rays hit
    object: np.ndarray  # (M,) int32
    normal: np.ndarray  # (M, 3) float32, facing the ray origin
    points: np.ndarray  # (M, 3) float32 world hit points

    @property
    def hit(self) -> np.ndarray:
        return np.isfinite(self.t)


@dataclass
class _Mover:
    kind: Material
    object_id: int
    axis: int  # 0: moves along x, 1: along y
    line: float  # the fixed coordinate
    s0: float
    speed: float  # signed
    lo: float  # bounds of travel along the axis
    hi: float
    bounce: bool  # pedestrians walk back and forth; cars wrap around


class SessionWorld:
    """World of one session. Deterministic given (town, session rng, shadows flag)."""

    def __init__(self, town: Town, rng: np.random.Generator, *, moving_cars: int, pedestrians: int,
                 parked_fill: float, shadows: bool = True, lighting: str = "random", ego_clearance: float = 6.0) -> None:
        self.town = town
        self.lighting = Lighting.draw(rng)  # drawn even when flat, so the rest of the session stays the same
        if lighting == "flat":
            self.lighting = Lighting.flat()
        if not shadows:
            self.lighting = Lighting(**{**self.lighting.__dict__, "shadows": False})
        self.ego_clearance = ego_clearance
        obj = town.objects.arrays()
        material = list(obj["material"])
        colour = list(map(tuple, obj["colour"]))
        colour2 = list(map(tuple, obj["colour2"]))
        pattern = list(map(tuple, obj["pattern"]))

        def add(mat: Material, c) -> int:
            material.append(int(mat))
            colour.append(tuple(float(v) for v in c))
            colour2.append((0.0, 0.0, 0.0))
            pattern.append((0.0, 0.0, 0.0))
            return len(material) - 1

        # parked cars: persistent slots always, the others with probability parked_fill
        v, t, o = [town.vertices], [town.triangles], [town.triangle_object]
        n = len(town.vertices)
        self.parked: list[int] = []
        for slot in town.parking:
            if slot.persistent or rng.random() < parked_fill:
                oid = add(Material.CAR, slot.colour)
                self.parked.append(oid)
                for part in car_parts(slot.x, slot.y, slot.yaw):
                    v.append(part.vertices.astype(np.float32))
                    t.append((part.triangles + n).astype(np.uint32))
                    o.append(np.full(len(part.triangles), oid, dtype=np.int32))
                    n += len(part.vertices)
        self.static_vertices = np.vstack(v).astype(np.float32)
        self.static_triangles = np.vstack(t).astype(np.uint32)
        self.static_object = np.concatenate(o).astype(np.int32)

        # movers
        sx, sy = town.street_x, town.street_y
        lo_off = town.lane_offset
        hs = town.half_street
        self.movers: list[_Mover] = []
        for _ in range(moving_cars):
            axis = int(rng.integers(2))
            lines = sx if axis == 1 else sy  # moving along y happens on a north-south street (x = const)
            c = float(lines[int(rng.integers(len(lines)))])
            direction = 1.0 if rng.random() < 0.5 else -1.0
            # right-hand traffic: +x drives at y = c - lo, -x at c + lo; +y at x = c + lo, -y at c - lo
            side = -direction if axis == 0 else direction
            extent = (sx[0] - 30, sx[-1] + 30) if axis == 0 else (sy[0] - 30, sy[-1] + 30)
            oid = add(Material.CAR, np.clip(_CAR_PALETTE[int(rng.integers(len(_CAR_PALETTE)))] + rng.uniform(-0.04, 0.04, 3), 0.02, 1))
            self.movers.append(_Mover(Material.CAR, oid, axis, c + side * lo_off, float(rng.uniform(*extent)),
                                      direction * float(rng.uniform(5.0, 11.0)), extent[0], extent[1], False))
        for _ in range(pedestrians):
            axis = int(rng.integers(2))
            lines, others = (sy, sx) if axis == 0 else (sx, sy)
            c = float(lines[int(rng.integers(len(lines)))])
            k = int(rng.integers(len(others) - 1))
            lo, hi = others[k] + hs + 1.0, others[k + 1] - hs - 1.0
            side = 1.0 if rng.random() < 0.5 else -1.0
            offset = side * (hs - rng.uniform(0.6, 1.9))
            oid = add(Material.PEDESTRIAN, _CLOTHES[int(rng.integers(len(_CLOTHES)))])
            speed = float(rng.uniform(0.9, 1.7)) * (1.0 if rng.random() < 0.5 else -1.0)
            self.movers.append(_Mover(Material.PEDESTRIAN, oid, axis, c + offset, float(rng.uniform(lo, hi)), speed,
                                      float(lo), float(hi), True))
        self.material = np.asarray(material, dtype=np.int32)
        self.colour = np.asarray(colour, dtype=np.float32)
        self.colour2 = np.asarray(colour2, dtype=np.float32)
        self.pattern = np.asarray(pattern, dtype=np.float32)
        self.velocity = np.zeros((len(material), 3), dtype=np.float32)  # updated per instant for movers
        self._reflect = np.array([MATERIALS[Material(m)].lidar_reflectivity for m in range(len(Material))], dtype=np.float32)
        self._scene_cache: tuple[float, object, np.ndarray, np.ndarray] | None = None
        # mover meshes in their own frame (x forward, on the ground): two boxes each, same topology
        car = car_parts(0.0, 0.0, 0.0)
        ped = [box_mesh((0.0, 0.0, 0.85), (0.35, 0.5, 1.7)), box_mesh((0.0, 0.0, 1.82), (0.22, 0.22, 0.24))]
        self._car_template = (np.vstack([p.vertices for p in car]), np.vstack([car[0].triangles, car[1].triangles + 8]))
        self._ped_template = (np.vstack([p.vertices for p in ped]), np.vstack([ped[0].triangles, ped[1].triangles + 8]))
        assert np.array_equal(self._car_template[1], self._ped_template[1])
        self.static_scene = o3d.t.geometry.RaycastingScene()
        self.static_scene.add_triangles(o3d.core.Tensor(self.static_vertices), o3d.core.Tensor(self.static_triangles))
        self._ground_luts()

    def _ground_luts(self) -> None:
        """1-D lookups along x and y (1 cm): distance to the nearest street centre line and block index; a 0.5 m
        value-noise texture. The ground look of a hit then costs a few gathers instead of searches."""
        town = self.town
        pad = 250.0
        self._lut_res = 0.01
        for axis, lines in (("x", town.street_x), ("y", town.street_y)):
            lo = float(lines[0] - pad)
            coords = lo + self._lut_res * np.arange(int((lines[-1] - lines[0] + 2 * pad) / self._lut_res) + 1)
            idx = np.clip(np.searchsorted(lines, coords), 1, len(lines) - 1)
            dist = np.minimum(np.abs(coords - lines[idx - 1]), np.abs(lines[idx] - coords))
            outside = (coords < lines[0] - town.half_street) | (coords > lines[-1] + town.half_street)
            dist[outside] = 1e6  # no street out there
            block = np.clip(idx - 1, 0, len(lines) - 2)
            block[outside] = -1
            setattr(self, f"_lut_{axis}0", lo)
            setattr(self, f"_lut_d{axis}", dist.astype(np.float32))
            setattr(self, f"_lut_b{axis}", block.astype(np.int16))
        self._noise_res = 0.5
        nx = int(len(self._lut_dx) * self._lut_res / self._noise_res) + 2
        ny = int(len(self._lut_dy) * self._lut_res / self._noise_res) + 2
        rng = np.random.default_rng([self.town.seed, 0x6E01])
        self._noise = rng.random((ny, nx), dtype=np.float32)

    # ---------------------------------------------------------------------------------------------- movers
    def mover_states(self, t: float) -> list[tuple[_Mover, float, float, float, np.ndarray]]:
        """(mover, x, y, yaw, velocity) for every mover at time t."""
        out = []
        for m in self.movers:
            span = m.hi - m.lo
            if m.bounce:
                u = (m.s0 - m.lo + m.speed * t) % (2 * span)
                pos, sign = (m.lo + u, 1.0) if u < span else (m.hi - (u - span), -1.0)
                vel = m.speed * sign
            else:
                pos, vel = m.lo + (m.s0 - m.lo + m.speed * t) % span, m.speed
            if m.axis == 0:
                x, y, yaw, v = pos, m.line, 0.0 if vel > 0 else np.pi, np.array([vel, 0.0, 0.0])
            else:
                x, y, yaw, v = m.line, pos, np.pi / 2 if vel > 0 else -np.pi / 2, np.array([0.0, vel, 0.0])
            out.append((m, float(x), float(y), float(yaw), v))
        return out

    def _dynamic(self, t: float, ego_xy: tuple[float, float]):
        """The movers at time t as a small scene (rebuilt per instant, cached) and its triangle -> object map."""
        if self._scene_cache is not None and self._scene_cache[0] == t:
            return self._scene_cache[1], self._scene_cache[2]
        self.velocity[:] = 0.0
        states = [st for st in self.mover_states(t)
                  if np.hypot(st[1] - ego_xy[0], st[2] - ego_xy[1]) >= self.ego_clearance]  # none inside the ego
        scene, objs, boxes = None, np.zeros(0, dtype=np.int32), []
        if states:
            for m, _, _, _, vel in states:
                self.velocity[m.object_id] = vel
            xy = np.array([[x, y, 0.0] for _, x, y, _, _ in states])
            yaw = np.array([st[3] for st in states])
            c, s_ = np.cos(yaw), np.sin(yaw)
            rot = np.zeros((len(states), 3, 3))
            rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s_, s_, c, 1.0
            is_car = np.array([m.kind == Material.CAR for m, *_ in states])
            templ = np.where(is_car[:, None, None], self._car_template[0][None], self._ped_template[0][None])
            verts = np.einsum("kij,knj->kni", rot, templ) + xy[:, None, :]  # (K, 16, 3)
            nv, nt = self._car_template[0].shape[0], self._car_template[1].shape[0]
            tris = self._car_template[1][None] + (np.arange(len(states)) * nv)[:, None, None]
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(o3d.core.Tensor(verts.reshape(-1, 3).astype(np.float32)),
                                o3d.core.Tensor(tris.reshape(-1, 3).astype(np.uint32)))
            objs = np.repeat(np.array([m.object_id for m, *_ in states], dtype=np.int32), nt)
            boxes = np.stack([verts.min(axis=1), verts.max(axis=1)], axis=1)
        box_arr = np.array(boxes, dtype=np.float64).reshape(-1, 2, 3)
        self._scene_cache = (t, scene, objs, box_arr)
        return scene, objs

    def mover_boxes(self, t: float, ego_xy: tuple[float, float]) -> np.ndarray:
        """Axis-aligned bounds (K, 2, 3) (min, max corners) of the movers rendered at time t."""
        self._dynamic(t, ego_xy)
        assert self._scene_cache is not None
        return self._scene_cache[3]

    # ---------------------------------------------------------------------------------------------- casting
    def cast(self, origins: np.ndarray, directions: np.ndarray, t: float, ego_xy: tuple[float, float],
             *, any_hit: bool = False, dynamic_candidates: np.ndarray | None = None) -> Hits | np.ndarray:
        """Cast rays (world frame, float32) at time t. With any_hit, only a bool (N,) 'blocked' mask is returned.

        `dynamic_candidates`: indices of the only rays that can hit a mover (a conservative superset, e.g. the pixels
        inside the movers' projected bounds); the others skip the mover scene.
        """
        rays = np.empty((len(directions), 6), dtype=np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = directions
        rays_t = o3d.core.Tensor(rays)
        dyn, dyn_obj = self._dynamic(t, ego_xy)
        if any_hit:
            blocked = self.static_scene.test_occlusions(rays_t).numpy()
            if dyn is not None:
                blocked |= dyn.test_occlusions(rays_t).numpy()
            return blocked
        r = self.static_scene.cast_rays(rays_t)
        th = r["t_hit"].numpy()
        prim = r["primitive_ids"].numpy()
        if dyn is None:
            idx = np.nonzero(np.isfinite(th))[0]
            obj = self.static_object[prim[idx]]
            normal = r["primitive_normals"].numpy()[idx]
        else:
            if dynamic_candidates is None:
                rd = dyn.cast_rays(rays_t)
                td, dprim, dnorm = rd["t_hit"].numpy(), rd["primitive_ids"].numpy(), rd["primitive_normals"].numpy()
            else:
                td = np.full(len(th), np.inf, dtype=np.float32)
                dprim = np.zeros(len(th), dtype=np.uint32)
                dnorm = np.zeros((len(th), 3), dtype=np.float32)
                if len(dynamic_candidates):
                    rd = dyn.cast_rays(o3d.core.Tensor(rays[dynamic_candidates]))
                    td[dynamic_candidates] = rd["t_hit"].numpy()
                    dprim[dynamic_candidates] = rd["primitive_ids"].numpy()
                    dnorm[dynamic_candidates] = rd["primitive_normals"].numpy()
            closer = td < th
            th = np.minimum(th, td)
            idx = np.nonzero(np.isfinite(th))[0]
            is_dyn = np.nonzero(closer[idx])[0]
            # static primitive ids of rays that only hit a mover are invalid: clip before the gather, then overwrite
            obj = self.static_object[np.minimum(prim[idx], len(self.static_object) - 1)]
            normal = r["primitive_normals"].numpy()[idx]
            if len(is_dyn):
                di = idx[is_dyn]
                obj[is_dyn] = dyn_obj[dprim[di]]
                normal[is_dyn] = dnorm[di]
        d = directions[idx]
        flip = np.einsum("ij,ij->i", normal, d) > 0
        normal[flip] *= -1.0
        points = d * th[idx, None] + origins[idx]
        return Hits(th, idx, obj, normal, points)

    # ---------------------------------------------------------------------------------------------- appearance
    def surface(self, hits: Hits) -> tuple[np.ndarray, np.ndarray]:
        """Albedo (M, 3) in 0..1 and LiDAR reflectivity (M,) of every hit."""
        obj = hits.object
        p = hits.points
        n = hits.normal
        mat = self.material[obj]
        albedo = self.colour[obj].copy()
        refl = self._reflect[mat].copy()

        # buildings: windows on the walls, darker roofs
        b = mat == Material.BUILDING
        if b.any():
            bi = np.nonzero(b)[0]
            nb, pb = n[bi], p[bi]
            wall = np.abs(nb[:, 2]) < 0.5
            pat = self.pattern[obj[bi]]
            u = pb[:, 0] * -nb[:, 1] + pb[:, 1] * nb[:, 0]
            fu = np.mod(u / pat[:, 0], 1.0)
            fz = np.mod(pb[:, 2] / pat[:, 1], 1.0)
            half = pat[:, 2] / 2
            window = wall & (np.abs(fu - 0.5) < half) & (fz > 0.3) & (fz < 0.85) & (pb[:, 2] > 1.0)
            # a band between floors, slightly darker: makes facades of equal colour differ by floor height
            band = wall & ~window & (fz < 0.08)
            roof = ~wall
            a = albedo[bi]
            a[window] = self.colour2[obj[bi][window]]
            a[band] *= 0.8
            a[roof] = a[roof] * 0.55 + 0.12
            albedo[bi] = a
            r = refl[bi]
            r[window] = 0.08
            refl[bi] = r

        g = mat == Material.GROUND
        if g.any():
            gi = np.nonzero(g)[0]
            albedo[gi], refl[gi] = self._ground(p[gi])
        f = mat == Material.FOLIAGE
        if f.any():
            fi = np.nonzero(f)[0]
            albedo[fi] *= (0.75 + 0.5 * _hash2(p[fi, 0] * 2.5 + p[fi, 2] * 1.7, p[fi, 1] * 2.5 - p[fi, 2]))[:, None]
        c = mat == Material.CAR
        if c.any():  # windows of the cabin (upper part) are dark glass
            ci = np.nonzero(c)[0]
            glass = (p[ci, 2] > 1.15) & (np.abs(n[ci, 2]) < 0.6)
            albedo[ci[glass]] = (0.1, 0.12, 0.15)
            refl[ci[glass]] = 0.1
        return albedo, refl

    def _ground(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        town = self.town
        x, y = p[:, 0], p[:, 1]
        ix = np.clip(((x - self._lut_x0) / self._lut_res).astype(np.int64), 0, len(self._lut_dx) - 1)
        iy = np.clip(((y - self._lut_y0) / self._lut_res).astype(np.int64), 0, len(self._lut_dy) - 1)
        dx, dy = self._lut_dx[ix], self._lut_dy[iy]
        bx, by = self._lut_bx[ix], self._lut_by[iy]
        noise = self._noise[(iy * self._lut_res / self._noise_res).astype(np.int64),
                            (ix * self._lut_res / self._noise_res).astype(np.int64)]
        rh, hs = np.float32(town.road_half_width), np.float32(town.half_street)
        road = (dx < rh) | (dy < rh)
        street = (dx < hs) | (dy < hs)
        sidewalk = street & ~road
        inside = (bx >= 0) & (by >= 0)
        kind = np.where(inside, town.block_kind[np.maximum(bx, 0), np.maximum(by, 0)], 2)
        plaza = ~street & (kind == 1)
        # grass everywhere else (parks, lawns, outside the town)
        albedo = np.empty((len(p), 3), dtype=np.float32)
        refl = np.full(len(p), 0.25, dtype=np.float32)
        albedo[:] = _GRASS
        scale = np.float32(0.85) + np.float32(0.3) * noise
        if plaza.any():
            tile = ((np.floor(x[plaza] / 1.5) + np.floor(y[plaza] / 1.5)) % 2).astype(np.float32)
            albedo[plaza] = _PLAZA
            scale[plaza] = 0.9 + 0.1 * tile
            refl[plaza] = 0.3
        albedo[sidewalk] = _SIDEWALK
        scale[sidewalk] = 0.92 + 0.1 * noise[sidewalk]
        refl[sidewalk] = 0.3
        ri = np.nonzero(road)[0]
        albedo[ri] = _ASPHALT
        scale[ri] = 0.9 + 0.2 * noise[ri]
        refl[ri] = 0.08
        albedo *= scale[:, None]
        # markings on the road only: dashed centre lines (not in intersections), parking-lane lines, zebra crossings
        dxr, dyr, xr, yr = dx[ri], dy[ri], x[ri], y[ri]
        on_x = (dxr < rh) & (dyr >= hs)
        on_y = (dyr < rh) & (dxr >= hs)
        edge = rh - np.float32(PARKING_LANE)
        mark = (on_x & (dxr < 0.08) & (np.mod(yr, 6.0) < 3.0)) | (on_y & (dyr < 0.08) & (np.mod(xr, 6.0) < 3.0))
        mark |= (on_x & (np.abs(dxr - edge) < 0.07)) | (on_y & (np.abs(dyr - edge) < 0.07))
        mark |= on_x & (dyr < hs + 3.0) & (np.mod(xr, 1.0) < 0.5)
        mark |= on_y & (dxr < hs + 3.0) & (np.mod(yr, 1.0) < 0.5)
        mi = ri[mark]
        albedo[mi] = _MARKING
        refl[mi] = 0.7
        return albedo, refl


_GRASS = np.array([0.28, 0.45, 0.2], dtype=np.float32)
_PLAZA = np.array([0.62, 0.6, 0.56], dtype=np.float32)
_SIDEWALK = np.array([0.7, 0.7, 0.68], dtype=np.float32)
_ASPHALT = np.array([0.22, 0.22, 0.23], dtype=np.float32)
_MARKING = np.array([0.9, 0.9, 0.85], dtype=np.float32)


def _hash2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A deterministic value in [0, 1) per (a, b): procedural texture noise."""
    h = np.sin(a * 12.9898 + b * 78.233) * 43758.5453
    return (h - np.floor(h)).astype(np.float32)
