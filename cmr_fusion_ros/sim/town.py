"""A procedurally generated town, identical for a given seed and :class:`TownConfig`.

Layout: a grid of ``blocks_x × blocks_y`` blocks of varied sizes separated by streets (two lanes, right-hand traffic,
sidewalks). Blocks hold buildings (one or two boxes each, so some are L-shaped; varied footprints, heights, wall
colours and window patterns) or parks with trees. Sidewalks carry street lights and trees; parking slots line the kerbs.
World frame: x east, y north, z up, ground at z = 0 (this is the ``odom`` frame of the bags).

Every triangle of the static scene belongs to an *object*; objects carry a material (what the camera, LiDAR and radar
see) and colours. The ground is one object whose look (asphalt, lane markings, sidewalk, grass, plaza) is resolved
from the hit position.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from cmr_fusion_ros.sim.config import TownConfig
from cmr_fusion_ros.sim.geometry import MeshPart, box_mesh, cone_mesh, cylinder_mesh, octa_sphere_mesh

PARKING_LANE = 2.2  # width of the parking lane along each kerb, metres
SIDEWALK = 2.5

__all__ = ["Building", "Material", "MATERIALS", "ObjectTable", "ParkingSlot", "Town", "generate_town"]


class Material(enum.IntEnum):
    GROUND = 0
    BUILDING = 1
    POLE = 2
    TRUNK = 3
    FOLIAGE = 4
    CAR = 5
    PEDESTRIAN = 6


@dataclass(frozen=True)
class MaterialProps:
    lidar_reflectivity: float  # 0..1 (diffuse)
    radar_rcs_dbsm: float  # RCS of the whole object at normal incidence, roughly
    radar_specular: float  # exponent on |cos(incidence)|: high for flat metal


MATERIALS: dict[Material, MaterialProps] = {
    Material.GROUND: MaterialProps(0.10, -25.0, 1.0),
    Material.BUILDING: MaterialProps(0.45, 10.0, 2.0),
    Material.POLE: MaterialProps(0.60, 8.0, 0.5),
    Material.TRUNK: MaterialProps(0.35, -5.0, 0.5),
    Material.FOLIAGE: MaterialProps(0.25, -12.0, 0.3),
    Material.CAR: MaterialProps(0.55, 15.0, 1.5),
    Material.PEDESTRIAN: MaterialProps(0.30, -5.0, 0.5),
}


@dataclass(frozen=True)
class Building:
    """One building: its boxes (axis-aligned, each (xmin, ymin, xmax, ymax, height)) and its look."""

    object_id: int
    boxes: tuple[tuple[float, float, float, float, float], ...]
    wall_colour: tuple[float, float, float]
    window_colour: tuple[float, float, float]
    window_spacing: float  # metres between window centres along the wall
    floor_height: float
    window_ratio: float  # fraction of a bay that is glass

    @property
    def height(self) -> float:
        return max(b[4] for b in self.boxes)


@dataclass(frozen=True)
class ParkingSlot:
    x: float
    y: float
    yaw: float
    persistent: bool  # occupied in every session (else drawn per session)
    colour: tuple[float, float, float]


@dataclass
class ObjectTable:
    """Per-object attributes, indexed by object id. Object 0 is the ground."""

    material: list[int] = field(default_factory=list)
    colour: list[tuple[float, float, float]] = field(default_factory=list)
    colour2: list[tuple[float, float, float]] = field(default_factory=list)  # windows for buildings
    pattern: list[tuple[float, float, float]] = field(default_factory=list)  # spacing, floor height, ratio

    def add(self, material: Material, colour, colour2=(0, 0, 0), pattern=(0.0, 0.0, 0.0)) -> int:
        self.material.append(int(material))
        self.colour.append(tuple(float(c) for c in colour))
        self.colour2.append(tuple(float(c) for c in colour2))
        self.pattern.append(tuple(float(p) for p in pattern))
        return len(self.material) - 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "material": np.asarray(self.material, dtype=np.int32),
            "colour": np.asarray(self.colour, dtype=np.float32).reshape(-1, 3),
            "colour2": np.asarray(self.colour2, dtype=np.float32).reshape(-1, 3),
            "pattern": np.asarray(self.pattern, dtype=np.float32).reshape(-1, 3),
        }


@dataclass
class Town:
    seed: int
    config: TownConfig
    street_x: np.ndarray  # x of the north-south street centre lines (blocks_x + 1)
    street_y: np.ndarray  # y of the east-west street centre lines (blocks_y + 1)
    buildings: list[Building]
    parking: list[ParkingSlot]
    objects: ObjectTable
    vertices: np.ndarray  # (V, 3) float32, static scene without parked cars
    triangles: np.ndarray  # (T, 3) uint32
    triangle_object: np.ndarray  # (T,) int32
    block_kind: np.ndarray  # (blocks_x, blocks_y): 0 buildings on grass, 1 buildings on plaza, 2 park
    counts: dict[str, int]

    @property
    def half_street(self) -> float:
        return self.config.street_width / 2.0

    @property
    def lane_offset(self) -> float:
        """Distance of a lane centre from the street centre line."""
        return (self.road_half_width - PARKING_LANE) / 2.0

    @property
    def road_half_width(self) -> float:
        return self.config.street_width / 2.0 - SIDEWALK

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (float(self.street_x[0]), float(self.street_y[0]), float(self.street_x[-1]), float(self.street_y[-1]))

    def building(self, object_id: int) -> Building:
        for b in self.buildings:
            if b.object_id == object_id:
                return b
        raise KeyError(object_id)

    def summary(self) -> dict:
        """JSON-ready description: enough for tools to check that sessions share a town."""
        return {
            "seed": self.seed,
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "street_x": [round(float(v), 3) for v in self.street_x],
            "street_y": [round(float(v), 3) for v in self.street_y],
            "counts": dict(self.counts),
            "triangles": int(len(self.triangles)),
            "buildings": [
                {
                    "object_id": b.object_id,
                    "boxes": [[round(float(v), 3) for v in box] for box in b.boxes],
                    "wall_colour": [round(c, 4) for c in b.wall_colour],
                    "window_colour": [round(c, 4) for c in b.window_colour],
                }
                for b in self.buildings
            ],
        }


_WALL_PALETTE = np.array(
    [
        [0.80, 0.75, 0.65], [0.70, 0.35, 0.25], [0.85, 0.85, 0.80], [0.55, 0.60, 0.65], [0.90, 0.80, 0.50],
        [0.45, 0.50, 0.40], [0.75, 0.55, 0.45], [0.35, 0.40, 0.55], [0.95, 0.90, 0.85], [0.60, 0.30, 0.35],
        [0.50, 0.45, 0.40], [0.70, 0.75, 0.85],
    ]
)  # fmt: skip
_CAR_PALETTE = np.array(
    [[0.8, 0.1, 0.1], [0.1, 0.2, 0.6], [0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.5, 0.5, 0.55], [0.9, 0.7, 0.1],
     [0.2, 0.5, 0.3], [0.6, 0.6, 0.7]]
)  # fmt: skip


def _jitter(rng: np.random.Generator, base: np.ndarray, amount: float = 0.06) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(base + rng.uniform(-amount, amount, 3), 0.02, 1.0))


class _MeshBuilder:
    def __init__(self) -> None:
        self.v: list[np.ndarray] = []
        self.t: list[np.ndarray] = []
        self.o: list[np.ndarray] = []
        self.n = 0

    def add(self, part: MeshPart, object_id: int) -> None:
        self.v.append(part.vertices)
        self.t.append(part.triangles + self.n)
        self.o.append(np.full(len(part.triangles), object_id, dtype=np.int32))
        self.n += len(part.vertices)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            np.vstack(self.v).astype(np.float32),
            np.vstack(self.t).astype(np.uint32),
            np.concatenate(self.o).astype(np.int32),
        )


def tree_parts(rng: np.random.Generator, x: float, y: float) -> tuple[MeshPart, MeshPart, tuple]:
    h = rng.uniform(2.0, 3.5)
    trunk = cylinder_mesh((x, y, 0.0), rng.uniform(0.15, 0.3), h, segments=6)
    if rng.random() < 0.3:
        r = rng.uniform(1.2, 2.0)
        crown = cone_mesh((x, y, h * 0.7), r, rng.uniform(4.0, 7.0), segments=8)
    else:
        r = rng.uniform(1.5, 3.2)
        crown = octa_sphere_mesh((x, y, h + r * 0.7), (r, r, r * rng.uniform(0.8, 1.3)))
    green = np.array([0.20, 0.45, 0.15]) + rng.uniform(-0.08, 0.12, 3) * np.array([1.0, 1.0, 0.5])
    return trunk, crown, tuple(float(c) for c in np.clip(green, 0.02, 1))


def car_parts(x: float, y: float, yaw: float, length: float = 4.5, width: float = 1.8) -> list[MeshPart]:
    """A car as two boxes (body, cabin) centred at (x, y) on the ground, heading `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    body = box_mesh((x, y, 0.45 + 0.2), (length, width, 0.9), yaw)
    off = -0.15 * length
    cabin = box_mesh((x + c * off, y + s * off, 1.1 + 0.25), (length * 0.55, width * 0.9, 0.5), yaw)
    return [body, cabin]


def generate_town(seed: int, config: TownConfig | None = None) -> Town:
    """Build the static town for `seed`. Pure function of (seed, config)."""
    cfg = config or TownConfig()
    rng = np.random.default_rng([int(seed), 0x70FF])
    sw = cfg.street_width
    hs = sw / 2.0
    road_half = hs - SIDEWALK
    bx = rng.uniform(cfg.block_min, cfg.block_max, cfg.blocks_x)
    by = rng.uniform(cfg.block_min, cfg.block_max, cfg.blocks_y)
    street_x = np.concatenate([[0.0], np.cumsum(bx + sw)])
    street_y = np.concatenate([[0.0], np.cumsum(by + sw)])
    street_x -= street_x[-1] / 2.0
    street_y -= street_y[-1] / 2.0

    objects = ObjectTable()
    mesh = _MeshBuilder()
    counts = {"buildings": 0, "trees": 0, "poles": 0, "parking_slots": 0}

    # ground: one large quad (two triangles) beyond the outer streets
    objects.add(Material.GROUND, (0.3, 0.3, 0.3))
    pad = 200.0
    x0, x1 = street_x[0] - pad, street_x[-1] + pad
    y0, y1 = street_y[0] - pad, street_y[-1] + pad
    ground = MeshPart(np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], dtype=float),
                      np.array([[0, 1, 2], [0, 2, 3]]))
    mesh.add(ground, 0)

    block_kind = np.zeros((cfg.blocks_x, cfg.blocks_y), dtype=np.int32)
    buildings: list[Building] = []
    for i in range(cfg.blocks_x):
        for j in range(cfg.blocks_y):
            bx0, bx1 = street_x[i] + hs, street_x[i + 1] - hs
            by0, by1 = street_y[j] + hs, street_y[j + 1] - hs
            kind = int(rng.choice([0, 1, 2], p=[0.45, 0.4, 0.15]))
            block_kind[i, j] = kind
            if kind == 2:  # park: scattered trees
                for _ in range(int(rng.integers(6, 14))):
                    tx, ty = rng.uniform(bx0 + 3, bx1 - 3), rng.uniform(by0 + 3, by1 - 3)
                    trunk, crown, green = tree_parts(rng, tx, ty)
                    mesh.add(trunk, objects.add(Material.TRUNK, (0.35, 0.25, 0.15)))
                    mesh.add(crown, objects.add(Material.FOLIAGE, green))
                    counts["trees"] += 1
                continue
            # lots: split the block into nx x ny lots; buildings stand near the block edges
            nx, ny = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            xs = np.sort(np.concatenate([[bx0, bx1], rng.uniform(bx0 + 12, bx1 - 12, nx - 1)])) if nx > 1 else np.array([bx0, bx1])
            ys = np.sort(np.concatenate([[by0, by1], rng.uniform(by0 + 12, by1 - 12, ny - 1)])) if ny > 1 else np.array([by0, by1])
            for a in range(len(xs) - 1):
                for b in range(len(ys) - 1):
                    lx0, lx1, ly0, ly1 = xs[a], xs[a + 1], ys[b], ys[b + 1]
                    if lx1 - lx0 < 8 or ly1 - ly0 < 8 or rng.random() < 0.1:
                        continue
                    setback = rng.uniform(0.5, 4.0, 4)
                    fx0, fx1 = lx0 + setback[0], lx1 - setback[1]
                    fy0, fy1 = ly0 + setback[2], ly1 - setback[3]
                    height = float(rng.choice([rng.uniform(6, 14), rng.uniform(14, 30), rng.uniform(30, 55)],
                                              p=[0.5, 0.35, 0.15]))
                    boxes = [(fx0, fy0, fx1, fy1, height)]
                    if rng.random() < 0.35 and fx1 - fx0 > 12 and fy1 - fy0 > 12:
                        # L-shape: a lower wing replaces one quadrant
                        mx, my = (fx0 + fx1) / 2, (fy0 + fy1) / 2
                        low = height * rng.uniform(0.35, 0.7)
                        boxes = [(fx0, fy0, fx1, my, height), (fx0, my, mx, fy1, low)]
                        if rng.random() < 0.5:
                            boxes = [(fx0, fy0, mx, fy1, height), (mx, fy0, fx1, my, low)]
                    wall = _jitter(rng, _WALL_PALETTE[rng.integers(len(_WALL_PALETTE))])
                    glass = _jitter(rng, np.array([0.25, 0.32, 0.42]) * rng.uniform(0.5, 1.3), 0.05)
                    pattern = (float(rng.uniform(2.0, 4.5)), float(rng.uniform(3.0, 4.2)), float(rng.uniform(0.3, 0.7)))
                    oid = objects.add(Material.BUILDING, wall, glass, pattern)
                    for (ax0, ay0, ax1, ay1, h) in boxes:
                        mesh.add(box_mesh(((ax0 + ax1) / 2, (ay0 + ay1) / 2, h / 2), (ax1 - ax0, ay1 - ay0, h),
                                          bottom=False), oid)
                    buildings.append(Building(oid, tuple(tuple(float(v) for v in bb) for bb in boxes), wall, glass,
                                              *pattern))
                    counts["buildings"] += 1

    # sidewalks: street lights, trees; kerbs: parking slots
    parking: list[ParkingSlot] = []
    side = hs - 1.0  # sidewalk furniture line from the street centre
    park_off = road_half - PARKING_LANE / 2
    pole_colour = (0.55, 0.55, 0.58)
    for axis, lines, others in (("x", street_x, street_y), ("y", street_y, street_x)):
        for c in lines:
            for k in range(len(others) - 1):
                s0, s1 = others[k] + hs + 2.0, others[k + 1] - hs - 2.0
                for sign in (-1.0, 1.0):
                    s = s0 + rng.uniform(0, 8)
                    while s < s1:
                        pos = (c + sign * side, s) if axis == "x" else (s, c + sign * side)
                        r = rng.random()
                        if r < 0.35:
                            h = rng.uniform(5.5, 8.0)
                            oid = objects.add(Material.POLE, pole_colour)
                            mesh.add(cylinder_mesh((pos[0], pos[1], 0.0), 0.12, h, segments=6), oid)
                            # lamp arm towards the road
                            arm_len = 1.5
                            d = -sign
                            arm_c = (pos[0] + d * arm_len / 2, pos[1], h - 0.1) if axis == "x" else (pos[0], pos[1] + d * arm_len / 2, h - 0.1)
                            arm_s = (arm_len, 0.15, 0.15) if axis == "x" else (0.15, arm_len, 0.15)
                            mesh.add(box_mesh(arm_c, arm_s), oid)
                            counts["poles"] += 1
                        elif r < 0.7:
                            trunk, crown, green = tree_parts(rng, *pos)
                            mesh.add(trunk, objects.add(Material.TRUNK, (0.35, 0.25, 0.15)))
                            mesh.add(crown, objects.add(Material.FOLIAGE, green))
                            counts["trees"] += 1
                        s += rng.uniform(10, 22)
                    # parking slots along this kerb
                    s = s0 + 3.0 + rng.uniform(0, 4)
                    while s < s1 - 3.0:
                        if rng.random() < 0.6:
                            if axis == "x":
                                px, py, yaw = c + sign * park_off, s, np.pi / 2 if sign > 0 else -np.pi / 2
                            else:
                                px, py, yaw = s, c + sign * park_off, 0.0 if sign < 0 else np.pi
                            colour = _jitter(rng, _CAR_PALETTE[rng.integers(len(_CAR_PALETTE))], 0.04)
                            parking.append(ParkingSlot(float(px), float(py), float(yaw), bool(rng.random() < 0.5), colour))
                        s += rng.uniform(6.0, 9.0)
    counts["parking_slots"] = len(parking)
    v, t, o = mesh.arrays()
    return Town(
        seed=int(seed), config=cfg, street_x=street_x, street_y=street_y, buildings=buildings, parking=parking,
        objects=objects, vertices=v, triangles=t, triangle_object=o, block_kind=block_kind, counts=counts,
    )
