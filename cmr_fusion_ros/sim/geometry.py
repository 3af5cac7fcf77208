"""Small geometry helpers for the simulator: quaternions, rigid transforms and low-poly meshes (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MeshPart",
    "RigidTransform",
    "box_mesh",
    "cone_mesh",
    "cylinder_mesh",
    "octa_sphere_mesh",
    "quat_from_matrix",
    "quat_from_yaw",
    "quat_to_matrix",
    "rot_z",
]


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by `yaw` about +z."""
    return (0.0, 0.0, float(np.sin(yaw / 2.0)), float(np.cos(yaw / 2.0)))


def quat_to_matrix(q: tuple[float, float, float, float] | np.ndarray) -> np.ndarray:
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    s = 2.0 / n if n > 0 else 0.0
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def quat_from_matrix(m: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, w >= 0."""
    m = np.asarray(m, dtype=float)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return (float(q[0]), float(q[1]), float(q[2]), float(q[3]))


@dataclass(frozen=True)
class RigidTransform:
    """Maps points of a child frame into a parent frame: p_parent = rotation @ p_child + translation."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    @classmethod
    def from_quat(cls, translation, quat_xyzw) -> "RigidTransform":
        return cls(quat_to_matrix(quat_xyzw), np.asarray(translation, dtype=float))

    @property
    def quat(self) -> tuple[float, float, float, float]:
        return quat_from_matrix(self.rotation)

    def compose(self, child: "RigidTransform") -> "RigidTransform":
        """self ∘ child: maps child's child frame into self's parent frame."""
        return RigidTransform(self.rotation @ child.rotation, self.rotation @ child.translation + self.translation)

    def inverse(self) -> "RigidTransform":
        rt = self.rotation.T
        return RigidTransform(rt, -rt @ self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return points @ self.rotation.T + self.translation


@dataclass
class MeshPart:
    """Triangles of one object: vertices (V, 3) float, triangles (T, 3) int (outward, counter-clockwise)."""

    vertices: np.ndarray
    triangles: np.ndarray

    def transformed(self, rotation: np.ndarray, translation) -> "MeshPart":
        return MeshPart(self.vertices @ rotation.T + np.asarray(translation), self.triangles)


# unit cube [-0.5, 0.5]^3, 12 outward triangles
_CUBE_V = np.array(
    [[x, y, z] for z in (-0.5, 0.5) for y in (-0.5, 0.5) for x in (-0.5, 0.5)], dtype=float
)  # index = x + 2y + 4z
_CUBE_T = np.array(
    [
        [0, 2, 1], [1, 2, 3],  # bottom z-
        [4, 5, 6], [5, 7, 6],  # top z+
        [0, 1, 4], [1, 5, 4],  # y-
        [2, 6, 3], [3, 6, 7],  # y+
        [0, 4, 2], [2, 4, 6],  # x-
        [1, 3, 5], [3, 7, 5],  # x+
    ],
    dtype=np.int64,
)  # fmt: skip


def box_mesh(center, size, yaw: float = 0.0, *, bottom: bool = True) -> MeshPart:
    """An oriented box: center (x, y, z of the box centre), size (sx, sy, sz), rotated by yaw about z."""
    v = _CUBE_V * np.asarray(size, dtype=float)
    tris = _CUBE_T if bottom else _CUBE_T[2:]
    return MeshPart(v, tris.copy()).transformed(rot_z(yaw), center)


def cylinder_mesh(base, radius: float, height: float, segments: int = 8) -> MeshPart:
    """A closed vertical prism approximating a cylinder standing on `base` (x, y, z)."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)
    bottom = np.column_stack([ring, np.zeros(segments)])
    top = np.column_stack([ring, np.full(segments, height)])
    v = np.vstack([bottom, top, [[0, 0, 0]], [[0, 0, height]]])
    tris = []
    for i in range(segments):
        j = (i + 1) % segments
        tris += [[i, j, segments + j], [i, segments + j, segments + i]]
        tris += [[2 * segments + 1, segments + i, segments + j]]
        tris += [[2 * segments, j, i]]
    return MeshPart(v + np.asarray(base, dtype=float), np.array(tris, dtype=np.int64))


def cone_mesh(base, radius: float, height: float, segments: int = 8) -> MeshPart:
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    v = np.vstack([np.column_stack([radius * np.cos(a), radius * np.sin(a), np.zeros(segments)]), [[0, 0, height]], [[0, 0, 0]]])
    tris = []
    for i in range(segments):
        j = (i + 1) % segments
        tris += [[i, j, segments], [segments + 1, j, i]]
    return MeshPart(v + np.asarray(base, dtype=float), np.array(tris, dtype=np.int64))


def octa_sphere_mesh(center, radii) -> MeshPart:
    """A once-subdivided octahedron scaled to an ellipsoid (32 triangles): tree canopies, heads."""
    v = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    faces = [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    verts = [np.array(p, dtype=float) for p in v]
    cache: dict[tuple[int, int], int] = {}

    def mid(i: int, j: int) -> int:
        key = (min(i, j), max(i, j))
        if key not in cache:
            m = verts[i] + verts[j]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    tris = []
    for a, b, c in faces:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        tris += [[a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca]]
    vv = np.array(verts) * np.asarray(radii, dtype=float) + np.asarray(center, dtype=float)
    return MeshPart(vv, np.array(tris, dtype=np.int64))
