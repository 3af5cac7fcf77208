"""Rig-aware inputs: a sensor's data brought to the canonical rig the shipped models were trained on (no ROS).

The encoders learnt from one sensor rig, the simulator's default (:data:`CANONICAL_RIG`: camera 400 x 300 with a
90 degree field of view at (1.5, 0, 1.6) m, a 32-beam 1024-column LiDAR seeing -25..15 degrees at (1, 0, 1.9) m, a
radar at (3.6, 0, 0.6) m). Another rig gives other tensors for the same place. :class:`RigAdapter` turns one sensor's
decoded data (what :mod:`cmr_fusion_ros.core.preprocess` takes) into the data the canonical sensor of that modality
would have given, as far as geometry allows:

- **mount**: LiDAR and radar points are moved from their sensor frame into the vehicle frame with the sensor's mount
  (``base_link <- sensor``, from ``/tf_static`` or parameters), then expressed in the canonical sensor's frame, so
  mount height and position stop mattering (:func:`move_points_between`). ``crop_fov`` (off by default: no gain
  measured) also drops the points the canonical sensor could not see.
- **density**: a LiDAR with fewer beams or columns than the canonical one gets returns made between neighbouring
  beams / columns of its range image (interpolated on one surface, the nearer neighbour's range across a depth
  edge), so the bird's-eye point counts and the front-view rows look like the canonical sensor's
  (:func:`match_lidar_density`); ``thin`` (off by default: no gain measured) thins a denser one.
- **intensity**: scaled per sensor so a high percentile of its returns lands where the canonical LiDAR's does
  (:func:`intensity_scale_for`), when it is off by more than a factor ``intensity_tolerance``; or left out.
- **camera view**: the image is resampled to the canonical camera's intrinsics, field of view and orientation from the
  sensor's ``CameraInfo`` (a wider camera is cropped, a narrower one padded; :class:`CameraWarp`).

The canonical sensor itself passes through unchanged (:attr:`RigAdapter.is_identity`), so the default rig's tensors
are exactly the ones the models were trained and measured on. Which pieces help was measured on simulated rigs
(``models/README.md``, "Another sensor rig"); :class:`RigOptions` switches each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import cv2
import numpy as np

from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.types import Modality

__all__ = [
    "CANONICAL_RIG",
    "CAMERA_BORDERS",
    "INTENSITY_MODES",
    "CameraIntrinsics",
    "CameraWarp",
    "LidarLayout",
    "RigAdapter",
    "RigOptions",
    "SensorMount",
    "SensorRig",
    "crop_elevation",
    "crop_azimuth",
    "estimate_lidar_layout",
    "fill_ground",
    "intensity_p90",
    "intensity_scale_for",
    "match_lidar_density",
    "move_points_between",
    "parse_intrinsics",
    "parse_mount",
    "rig_adapters",
]

INTENSITY_MODES = ("keep", "auto", "drop")
CAMERA_BORDERS = ("replicate", "reflect", "mean", "black")
RADAR_FOV_MARGIN_DEG = 5.0  # radar returns kept this far outside the canonical radar's field of view
_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # base_link <- optical, REP 103


def _vec(key: str, value: Any, n: int) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(key, value, f"{n} finite numbers") from None
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ConfigError(key, value, f"{n} finite numbers")
    return out


@dataclass(frozen=True, slots=True)
class SensorMount:
    """Where a sensor sits on the vehicle: ``base_link <- sensor`` as a translation (m) and a unit quaternion
    ``x, y, z, w`` (a point ``p`` in the sensor frame is ``R p + t`` in ``base_link``)."""

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "translation", _vec("mount.translation", self.translation, 3))
        q = _vec("mount.rotation", self.rotation, 4)
        norm = math.sqrt(sum(v * v for v in q))
        if not 0.9 < norm < 1.1:
            raise ConfigError("mount.rotation", self.rotation, "a unit quaternion x, y, z, w")
        object.__setattr__(self, "rotation", tuple(v / norm for v in q))

    @classmethod
    def from_matrix(cls, rotation: np.ndarray, translation: Any) -> "SensorMount":
        """From a 3x3 rotation matrix (base_link <- sensor) and a translation."""
        r = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2.0
        x = math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2.0
        y = math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2.0
        z = math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2.0
        x = math.copysign(x, r[2, 1] - r[1, 2])
        y = math.copysign(y, r[0, 2] - r[2, 0])
        z = math.copysign(z, r[1, 0] - r[0, 1])
        return cls(tuple(float(v) for v in np.asarray(translation, dtype=np.float64).reshape(3)), (x, y, z, w))

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 rotation ``base_link <- sensor``."""
        x, y, z, w = self.rotation
        return np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])

    def compose(self, child: "SensorMount") -> "SensorMount":
        """``self * child``: the mount of a frame given relative to this one."""
        r = self.matrix
        return SensorMount.from_matrix(r @ child.matrix, r @ np.asarray(child.translation) + self.translation)

    def close_to(self, other: "SensorMount", tol_m: float = 1e-3, tol_rad: float = 1e-3) -> bool:
        dt = np.abs(np.subtract(self.translation, other.translation)).max()
        dr = np.abs(self.matrix - other.matrix).max()
        return bool(dt <= tol_m and dr <= tol_rad)


@dataclass(frozen=True, slots=True)
class CameraIntrinsics:
    """A pinhole camera (``sensor_msgs/CameraInfo``'s ``K``, size and distortion; ``plumb_bob`` /
    ``rational_polynomial`` coefficients are undistorted with OpenCV, an empty or all-zero ``distortion`` means
    none)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in ("width", "height"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < v <= 16384:
                raise ConfigError(f"camera_info.{key}", v, "an integer in 1..16384")
        for key in ("fx", "fy"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"camera_info.{key}", v, "a finite number > 0 (K[0] and K[4])")
        for key in ("cx", "cy"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"camera_info.{key}", getattr(self, key), "a finite number")
        object.__setattr__(self, "distortion", tuple(float(v) for v in self.distortion))

    def reduced(self, reduction: int) -> "CameraIntrinsics":
        """The intrinsics of the image decoded at 1/``reduction`` of its size (a JPEG's reduced decode,
        ``core.decode.Frame.reduction``: ceil of each side, pixel centres scaled about the image corner)."""
        if reduction == 1:
            return self
        r = float(reduction)
        return CameraIntrinsics(-(-self.width // reduction), -(-self.height // reduction), self.fx / r, self.fy / r,
                                (self.cx + 0.5) / r - 0.5, (self.cy + 0.5) / r - 0.5, self.distortion)

    @classmethod
    def pinhole(cls, width: int, height: int, hfov_deg: float) -> "CameraIntrinsics":
        """Square pixels, principal point at the image centre (the simulator's cameras)."""
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    @classmethod
    def from_camera_info(cls, msg: Any) -> "CameraIntrinsics":
        """From a ``sensor_msgs/CameraInfo``-like object (``width``, ``height``, ``k``, ``d``)."""
        k = np.asarray(getattr(msg, "k", getattr(msg, "K", ())), dtype=np.float64).reshape(-1)
        if k.size != 9:
            raise ConversionError("sensor_msgs/CameraInfo", "k", f"expected 9 numbers, got {k.size}")
        d = np.asarray(getattr(msg, "d", getattr(msg, "D", ())), dtype=np.float64).reshape(-1)
        model = str(getattr(msg, "distortion_model", "") or "")
        if np.any(d != 0) and model not in ("plumb_bob", "rational_polynomial"):
            raise ConversionError("sensor_msgs/CameraInfo", "distortion_model",
                                  f"{model!r} is not supported (plumb_bob, rational_polynomial)")
        return cls(int(msg.width), int(msg.height), float(k[0]), float(k[4]), float(k[2]), float(k[5]),
                   tuple(d) if np.any(d != 0) else ())

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def hfov_deg(self) -> float:
        return math.degrees(math.atan((self.cx + 0.5) / self.fx) + math.atan((self.width - 0.5 - self.cx) / self.fx))

    def close_to(self, other: "CameraIntrinsics", tol: float = 1e-3) -> bool:
        a = np.array([self.width, self.height, self.fx, self.fy, self.cx, self.cy])
        b = np.array([other.width, other.height, other.fx, other.fy, other.cx, other.cy])
        return bool(np.abs(a - b).max() <= tol and self.distortion == other.distortion)


@dataclass(frozen=True, slots=True)
class LidarLayout:
    """A spinning LiDAR's angular sampling: ``beams`` rows from ``vfov_min_deg`` to ``vfov_max_deg``, ``columns`` per
    turn."""

    beams: int
    columns: int
    vfov_min_deg: float
    vfov_max_deg: float

    def __post_init__(self) -> None:
        if isinstance(self.beams, bool) or not isinstance(self.beams, (int, np.integer)) or not 1 <= self.beams <= 1024:
            raise ConfigError("lidar_layout.beams", self.beams, "an integer in 1..1024")
        if (isinstance(self.columns, bool) or not isinstance(self.columns, (int, np.integer))
                or not 8 <= self.columns <= 65536):
            raise ConfigError("lidar_layout.columns", self.columns, "an integer in 8..65536")
        if not -90 <= self.vfov_min_deg <= self.vfov_max_deg <= 90:
            raise ConfigError("lidar_layout.vfov_max_deg", self.vfov_max_deg,
                              f"-90 <= vfov_min_deg ({self.vfov_min_deg}) <= vfov_max_deg <= 90")

    @property
    def elevation_step_deg(self) -> float:
        """Degrees between neighbouring beams (the span for a single beam)."""
        span = self.vfov_max_deg - self.vfov_min_deg
        return span / (self.beams - 1) if self.beams > 1 and span > 0 else 1.0

    @property
    def azimuth_step_deg(self) -> float:
        return 360.0 / self.columns


@dataclass(frozen=True, slots=True)
class SensorRig:
    """The sensors of one vehicle, as the rig-aware inputs need them (None: not known)."""

    camera_mount: SensorMount | None = None
    camera: CameraIntrinsics | None = None
    lidar_mount: SensorMount | None = None
    lidar_layout: LidarLayout | None = None
    radar_mount: SensorMount | None = None
    radar_hfov_deg: float | None = None
    lidar_intensity_p90: float | None = None  # the canonical LiDAR's 90th intensity percentile (the reference)

    def mount(self, modality: Modality) -> SensorMount | None:
        return {Modality.CAMERA: self.camera_mount, Modality.LIDAR: self.lidar_mount,
                Modality.RADAR: self.radar_mount}[Modality(modality)]


def _optical_mount(translation: tuple[float, float, float]) -> SensorMount:
    return SensorMount.from_matrix(_OPTICAL, translation)


# The simulator's default rig (config/sim_default.yaml, cmr_fusion_ros/sim/config.py): the rig of every training bag
# of the shipped models. tests/unit/test_rig.py checks it against the simulator's defaults.
CANONICAL_RIG = SensorRig(
    camera_mount=_optical_mount((1.5, 0.0, 1.6)),
    camera=CameraIntrinsics.pinhole(400, 300, 90.0),
    lidar_mount=SensorMount((1.0, 0.0, 1.9)),
    lidar_layout=LidarLayout(32, 1024, -25.0, 15.0),
    radar_mount=SensorMount((3.6, 0.0, 0.6)),
    radar_hfov_deg=100.0,
    lidar_intensity_p90=113.0,  # median over 200 scans of town 999 session 0 (5-95 %: 96-116)
)


def _numbers(key: str, text: str, allowed: str) -> list[float] | None:
    """The numbers of a parameter string (spaces or commas); None when it is empty; ConfigError naming ``key``."""
    parts = text.replace(",", " ").split()
    if not parts:
        return None
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise ConfigError(key, text, allowed) from None


def parse_mount(key: str, text: str) -> SensorMount | None:
    """A mount from a parameter string: ``"x y z"``, ``"x y z roll pitch yaw"`` (radians, fixed axes x, y, z) or
    ``"x y z qx qy qz qw"`` (``base_link <- sensor``); '' = not given (None)."""
    v = _numbers(key, text, "3, 6 or 7 numbers: x y z [roll pitch yaw | qx qy qz qw]")
    if v is None:
        return None
    if len(v) == 3:
        return SensorMount(tuple(v))
    if len(v) == 6:
        r, p, y = v[3:]
        cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
        rot = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                        [-sp, cp * sr, cp * cr]])
        return SensorMount.from_matrix(rot, v[:3])
    if len(v) == 7:
        try:
            return SensorMount(tuple(v[:3]), tuple(v[3:]))
        except ConfigError as err:
            raise ConfigError(key, text, err.allowed) from None
    raise ConfigError(key, text, "3, 6 or 7 numbers: x y z [roll pitch yaw | qx qy qz qw]")


def parse_intrinsics(key: str, text: str) -> CameraIntrinsics | None:
    """Camera intrinsics from a parameter string ``"width height fx fy cx cy"``; '' = not given (None)."""
    v = _numbers(key, text, "6 numbers: width height fx fy cx cy")
    if v is None:
        return None
    if len(v) != 6 or v[0] != int(v[0]) or v[1] != int(v[1]):
        raise ConfigError(key, text, "6 numbers: width height fx fy cx cy")
    try:
        return CameraIntrinsics(int(v[0]), int(v[1]), *v[2:])
    except ConfigError as err:
        raise ConfigError(key, text, err.allowed) from None


@dataclass(frozen=True, slots=True)
class RigOptions:
    """The ``rig`` parameter section: which rig-aware steps run, and the sensors' mounts / camera intrinsics when they
    are given as parameters (they win over a bag's ``/tf_static`` and ``CameraInfo``). ``enabled: false`` passes every
    sensor's data through unchanged."""

    enabled: bool = True
    mount: bool = True  # LiDAR and radar points moved to the canonical sensor's frame
    crop_fov: bool = False  # points outside the canonical sensor's field of view dropped (measured: no gain)
    density: bool = True  # a sparser LiDAR's returns made up to the canonical angular density
    thin: bool = False  # a denser LiDAR's returns thinned to the canonical angular density (measured: no gain)
    ground_fill: bool = False  # the flat ground the canonical LiDAR sees closer in than this one, added
    intensity: str = "auto"  # keep | auto (rescale when off by more than intensity_tolerance) | drop
    intensity_tolerance: float = 2.0
    camera_view: bool = True  # image resampled to the canonical camera's intrinsics and orientation
    camera_border: str = "replicate"  # what fills the canonical view outside a narrower camera's image
    camera_pad: bool = True  # False: a narrower camera keeps its own field of view (only wider ones are cropped)
    camera_mount: str = ""  # "x y z [roll pitch yaw | qx qy qz qw]", base_link <- camera optical frame
    lidar_mount: str = ""
    radar_mount: str = ""
    camera_intrinsics: str = ""  # "width height fx fy cx cy"

    def __post_init__(self) -> None:
        for key in ("enabled", "mount", "crop_fov", "density", "thin", "ground_fill", "camera_view", "camera_pad"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"rig.{key}", getattr(self, key), "true or false")
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError("rig.intensity", self.intensity, " | ".join(INTENSITY_MODES))
        if not (isinstance(self.intensity_tolerance, (int, float)) and not isinstance(self.intensity_tolerance, bool)
                and self.intensity_tolerance >= 1.0):
            raise ConfigError("rig.intensity_tolerance", self.intensity_tolerance, "a number >= 1")
        if self.camera_border not in CAMERA_BORDERS:
            raise ConfigError("rig.camera_border", self.camera_border, " | ".join(CAMERA_BORDERS))
        for key in ("camera_mount", "lidar_mount", "radar_mount", "camera_intrinsics"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"rig.{key}", getattr(self, key), "a string of numbers ('' = not given)")
        self.given()  # validates the strings

    @classmethod
    def from_dict(cls, d: Any) -> "RigOptions":
        """From the ``rig`` section of a parameter file (None: the defaults); unknown keys are refused."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError("rig", d, "a mapping of rig keys")
        known = [f.name for f in fields(cls)]
        for k in d:
            if k not in known:
                raise ConfigError(f"rig.{k}", d[k], f"a known key ({', '.join(known)})")
        kw = dict(d)
        tol = kw.get("intensity_tolerance")
        if isinstance(tol, int) and not isinstance(tol, bool):  # YAML's 2 for 2.0
            kw["intensity_tolerance"] = float(tol)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def given(self) -> SensorRig:
        """The mounts and intrinsics given as parameters (None where not)."""
        return SensorRig(
            camera_mount=parse_mount("rig.camera_mount", self.camera_mount),
            camera=parse_intrinsics("rig.camera_intrinsics", self.camera_intrinsics),
            lidar_mount=parse_mount("rig.lidar_mount", self.lidar_mount),
            radar_mount=parse_mount("rig.radar_mount", self.radar_mount),
        )

    def sensor_rig(self, recorded: SensorRig | None = None) -> SensorRig:
        """The sensors: the parameters where given, else what a bag recorded (``recorded``)."""
        g, r = self.given(), recorded or SensorRig()
        return replace(r, **{k: getattr(g, k) for k in ("camera_mount", "camera", "lidar_mount", "radar_mount")
                             if getattr(g, k) is not None})


# --------------------------------------------------------------------------------------------------------- points
def _xyz(cloud: np.ndarray, what: str) -> np.ndarray:
    names = cloud.dtype.names or ()
    for n in ("x", "y", "z"):
        if n not in names:
            raise ConversionError(what, n, f"field missing; the cloud has fields {list(names)}")
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=1).astype(np.float64)


def _finite_xyz(cloud: np.ndarray, what: str) -> np.ndarray:
    """Which points have a finite x, y and z (field by field: no (N, 3) copy, ~5x faster than ``_xyz`` for a 100k-point
    scan)."""
    names = cloud.dtype.names or ()
    ok = None
    for n in ("x", "y", "z"):
        if n not in names:
            raise ConversionError(what, n, f"field missing; the cloud has fields {list(names)}")
        f = np.isfinite(cloud[n])
        ok = f if ok is None else ok & f
    return ok


def _with_xyz(cloud: np.ndarray, pts: np.ndarray) -> np.ndarray:
    out = cloud.copy()
    out["x"], out["y"], out["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    return out


def move_points_between(cloud: np.ndarray, src: SensorMount, dst: SensorMount) -> np.ndarray:
    """A structured cloud seen from the sensor mounted at ``src``, expressed in the frame of a sensor mounted at
    ``dst`` (both ``base_link <- sensor``); other fields unchanged."""
    p = _xyz(cloud, "point cloud")
    base = p @ src.matrix.T + np.asarray(src.translation)
    return _with_xyz(cloud, (base - np.asarray(dst.translation)) @ dst.matrix)


def crop_elevation(cloud: np.ndarray, min_deg: float, max_deg: float) -> np.ndarray:
    """The points whose elevation from the frame's origin lies in ``[min_deg, max_deg]``."""
    p = _xyz(cloud, "point cloud")
    elev = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    return cloud[(elev >= min_deg) & (elev <= max_deg)]


def crop_azimuth(cloud: np.ndarray, hfov_deg: float) -> np.ndarray:
    """The points within ``hfov_deg / 2`` of the frame's x axis (a forward radar's field of view)."""
    p = _xyz(cloud, "point cloud")
    az = np.degrees(np.abs(np.arctan2(p[:, 1], p[:, 0])))
    return cloud[az <= hfov_deg / 2.0]


def estimate_lidar_layout(cloud: np.ndarray) -> LidarLayout | None:
    """Beams, columns and vertical field of view of a spinning LiDAR from one scan in its own frame: beams from the
    ``ring`` field when there is one (else from clusters of elevation angles), columns from the median azimuth step
    between neighbouring returns of the fullest beam. None when the scan is too small to tell or does not look like
    a spinning scanner's (under 20 returns per beam on median, or beams not at one elevation each)."""
    if len(cloud) < 100:
        return None
    p = _xyz(cloud, "lidar cloud")
    elev = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    az = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    names = cloud.dtype.names or ()
    if "ring" in names:
        ring = np.asarray(cloud["ring"]).astype(np.int64)
    else:  # beams = clusters of elevation (gaps over 0.2 degrees between sorted elevations)
        order = np.argsort(elev)
        starts = np.concatenate([[True], np.diff(elev[order]) > 0.2])
        ring = np.empty(len(elev), dtype=np.int64)
        ring[order] = np.cumsum(starts) - 1
    labels, counts = np.unique(ring, return_counts=True)
    beams = int(len(labels))
    if beams > 512 or np.median(counts) < 20:  # not rows of a spinning scanner (a few returns per "beam")
        return None
    med = np.array([np.median(elev[ring == r]) for r in labels])
    spread = np.array([np.percentile(np.abs(elev[ring == r] - m), 90) for r, m in zip(labels, med)])
    if np.median(spread) > 0.5:  # the rings are not at one elevation each
        return None
    fullest = labels[np.argmax(counts)]
    a = np.sort(az[ring == fullest])
    steps = np.diff(a)
    steps = steps[steps > 1e-4]
    if len(steps) < 10:
        return None
    columns = int(round(360.0 / float(np.median(steps))))
    return LidarLayout(max(beams, 1), int(np.clip(columns, 8, 65536)), round(float(med.min()), 3),
                       round(float(med.max()), 3))


def _beam_index(cloud: np.ndarray, elev: np.ndarray) -> np.ndarray:
    """Each return's beam, numbered 0.. from the lowest elevation up: the ``ring`` field when its numbers rise (or
    fall) with the rings' median elevations, so a ring without returns keeps its place; else the rank of each
    ring's (or, without the field, each cluster of elevation angles') median elevation."""
    if "ring" in (cloud.dtype.names or ()):
        ring = np.asarray(cloud["ring"]).astype(np.int64)
    else:
        order = np.argsort(elev)
        starts = np.concatenate([[True], np.diff(elev[order]) > math.radians(0.2)])
        ring = np.empty(len(elev), dtype=np.int64)
        ring[order] = np.cumsum(starts) - 1
    labels, inverse = np.unique(ring, return_inverse=True)
    med = np.array([np.median(elev[inverse == i]) for i in range(len(labels))])
    if "ring" in (cloud.dtype.names or ()) and len(labels) > 1:
        if np.all(np.diff(med) > 0):
            return ring - labels[0]
        if np.all(np.diff(med) < 0):
            return labels[-1] - ring
    rank = np.empty(len(labels), dtype=np.int64)
    rank[np.argsort(med, kind="stable")] = np.arange(len(labels))
    return rank[inverse]


def _upsample(grid: np.ndarray, m: int, axis: int, step: float, wrap: bool) -> np.ndarray:
    """A range image ``grid`` (rows, cols, 4: elevation, azimuth (radians), range, intensity; NaN = no return) with
    ``m - 1`` slots between neighbours along ``axis`` (``step`` radians apart), filled like a scanner ``m`` times
    finer: between two returns of one surface (3-D gap under 0.3 x the nearer range) range and intensity are
    interpolated linearly; across a depth edge, or next to a missing return, each slot takes the nearer neighbour's
    range and intensity (half a step at most into a missing one), at its own angle. Neighbour k lands at k * m."""
    g = np.moveaxis(grid, axis, 0)
    n = g.shape[0]
    pairs = n if wrap else n - 1
    out = np.full((pairs * m + (0 if wrap else 1),) + g.shape[1:], np.nan, dtype=g.dtype)
    out[::m][:n] = g
    a, b = g[:pairs], g[(np.arange(pairs) + 1) % n]
    a_ok, b_ok = np.isfinite(a[..., 2]), np.isfinite(b[..., 2])
    both = a_ok & b_ok
    f = g.dtype.type
    d = np.where(both, b[..., 1] - a[..., 1], f(0))
    d_az = (d + f(math.pi)) % f(2 * math.pi) - f(math.pi)  # azimuth difference across +-pi
    ang_a = np.where(a_ok[..., None], a[..., :2], b[..., :2])  # the start angle: a's, else b's minus one step
    unit = np.array([1.0, 0.0] if axis == 0 else [0.0, 1.0], dtype=g.dtype)
    ang_a = ang_a - np.where(a_ok, f(0), f(step))[..., None] * unit
    if axis == 0:
        delta = np.stack([np.where(both, b[..., 0] - a[..., 0], f(step)), np.where(both, d_az, f(0))], -1)
    else:
        delta = np.stack([np.where(both, b[..., 0] - a[..., 0], f(0)), np.where(both, d_az, f(step))], -1)
    pa = _spherical_to_xyz(a)
    pb = _spherical_to_xyz(b)
    same = both & (np.linalg.norm(pa - pb, axis=-1) < 0.3 * np.fmin(a[..., 2], b[..., 2]))
    for k in range(1, m):
        t = k / m
        mid = np.full(a.shape, np.nan, dtype=g.dtype)
        mid[..., :2] = ang_a + delta * f(t)
        near_a = a_ok & ((t < 0.5) | ((t == 0.5) & (~b_ok | (a[..., 2] <= b[..., 2]))))
        near_b = b_ok & ~near_a & ((t > 0.5) | (t == 0.5))
        for src_mask, src in ((near_a, a), (near_b, b)):
            mid[..., 2:][src_mask] = src[..., 2:][src_mask]
        lin = a[..., 2:] + (b[..., 2:] - a[..., 2:]) * f(t)
        mid[..., 2:][same] = lin[same]
        mid[~(near_a | near_b | same)] = np.nan
        out[k::m][:pairs] = mid
    return np.moveaxis(out, 0, axis)


def _spherical_to_xyz(g: np.ndarray) -> np.ndarray:
    e, a, r = g[..., 0], g[..., 1], g[..., 2]
    return np.stack([r * np.cos(e) * np.cos(a), r * np.cos(e) * np.sin(a), r * np.sin(e)], -1)


def match_lidar_density(cloud: np.ndarray, layout: LidarLayout, target: LidarLayout) -> np.ndarray:
    """The scan (in its own sensor frame) at about the angular density of ``target``.

    Sparser (``m`` = beam or column step / target step, rounded, > 1 along an axis): the returns are laid out in
    their range image (beam x column) and ``m - 1`` returns are made between neighbours (:func:`_upsample`, beams
    first, then columns, wrapping around), as a scanner ``m`` times finer would have measured them: interpolated on
    one surface, the nearer neighbour's range across a depth edge. The made returns carry the other fields of the
    return they were made from. Denser by over 20 %: an evenly spread fraction (the density ratio) of the returns is
    kept. Otherwise the scan itself."""
    m_el = max(1, int(round(layout.elevation_step_deg / target.elevation_step_deg)))
    m_az = max(1, int(round(layout.azimuth_step_deg / target.azimuth_step_deg)))
    if m_el == 1 and m_az == 1:
        # the fraction of this scanner's returns the target would have measured
        keep = (layout.elevation_step_deg * layout.azimuth_step_deg) / (target.elevation_step_deg
                                                                         * target.azimuth_step_deg)
        if keep >= 1.0 / 1.2:  # sparser, or denser by at most 20 %: left as it is
            return cloud
        i = np.arange(len(cloud))
        return cloud[np.floor((i + 1) * keep) > np.floor(i * keep)]  # evenly spread
    if len(cloud) == 0:
        return cloud
    p = _xyz(cloud, "lidar cloud")
    rng = np.linalg.norm(p, axis=1)
    elev = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
    az = np.arctan2(p[:, 1], p[:, 0])
    beam = _beam_index(cloud, elev)
    beams = int(beam.max()) + 1
    col = np.floor((az + math.pi) / (2 * math.pi) * layout.columns).astype(np.int64) % layout.columns
    inten = (np.asarray(cloud["intensity"], dtype=np.float64) if "intensity" in (cloud.dtype.names or ())
             else np.zeros(len(cloud)))
    grid = np.full((beams, layout.columns, 4), np.nan, dtype=np.float32)  # float32: half the memory traffic
    grid[beam, col] = np.stack([elev, az, rng, inten], -1)
    src = np.full((beams, layout.columns), -1, dtype=np.int64)
    src[beam, col] = np.arange(len(cloud))  # a return per cell (the last one when several fall in one)
    me = m_el if beams > 1 else 1
    if me > 1:
        grid = _upsample(grid, me, 0, math.radians(layout.elevation_step_deg), wrap=False)
        src = _nearest_donor(src, me, 0, wrap=False)
    if m_az > 1:
        grid = _upsample(grid, m_az, 1, math.radians(layout.azimuth_step_deg), wrap=True)
        src = _nearest_donor(src, m_az, 1, wrap=True)
    original = (np.arange(grid.shape[0]) % me == 0)[:, None] & (np.arange(grid.shape[1]) % m_az == 0)[None, :]
    new = np.isfinite(grid[..., 2]) & ~original  # the made returns; the scan's own are kept as they are
    made = grid[new]
    donor = src[new]
    donor[donor < 0] = 0
    extra = cloud[donor].copy()
    xyz = _spherical_to_xyz(made)
    extra["x"], extra["y"], extra["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if "intensity" in (cloud.dtype.names or ()):
        extra["intensity"] = made[:, 3]
    return np.concatenate([cloud, extra])


def _nearest_donor(src: np.ndarray, m: int, axis: int, wrap: bool) -> np.ndarray:
    """The index of the return each slot of :func:`_upsample` comes from (the nearer neighbour that has one)."""
    g = np.moveaxis(src, axis, 0)
    n = g.shape[0]
    pairs = n if wrap else n - 1
    out = np.full((pairs * m + (0 if wrap else 1),) + g.shape[1:], -1, dtype=g.dtype)
    out[::m][:n] = g
    a, b = g[:pairs], g[(np.arange(pairs) + 1) % n]
    for k in range(1, m):
        first, second = (a, b) if k / m <= 0.5 else (b, a)
        out[k::m][:pairs] = np.where(first >= 0, first, second)
    return np.moveaxis(out, 0, axis)


def fill_ground(cloud: np.ndarray, target: LidarLayout, ground_z: float, tolerance_m: float = 0.25,
                bins: int = 128) -> np.ndarray:
    """The scan (in the canonical LiDAR's frame, ground at ``ground_z``) with the flat ground the canonical LiDAR
    would see closer in than this sensor could: for each of ``bins`` azimuth sectors whose nearest return lies on the
    ground (within ``tolerance_m`` of ``ground_z``), ground returns at the target's beam elevations and columns whose
    ground distance is shorter than that nearest ground return's, with its sector's median ground intensity. A sector
    whose nearest return is not ground (something stands beside the vehicle) gets none."""
    if len(cloud) == 0 or ground_z >= 0:
        return cloud
    p = _xyz(cloud, "lidar cloud")
    dist = np.hypot(p[:, 0], p[:, 1])
    az = np.arctan2(p[:, 1], p[:, 0])
    sector = (np.floor((az + math.pi) / (2 * math.pi) * bins).astype(np.int64)) % bins
    nearest = np.full(bins, np.inf)
    np.minimum.at(nearest, sector, dist)
    on_ground = np.abs(p[:, 2] - ground_z) <= tolerance_m
    first = np.full(bins, np.inf)  # the nearest ground return per sector
    np.minimum.at(first, sector[on_ground], dist[on_ground])
    ok = np.isfinite(first) & (first <= nearest + 1e-6)  # the nearest return of the sector is on the ground
    if not ok.any():
        return cloud
    has_int = "intensity" in (cloud.dtype.names or ())
    inten = np.zeros(bins)
    if has_int:
        vals = np.asarray(cloud["intensity"], dtype=np.float64)
        for b in np.flatnonzero(ok):
            inten[b] = np.median(vals[on_ground & (sector == b)])
    el = np.radians(np.linspace(target.vfov_min_deg, target.vfov_max_deg, target.beams))
    el = el[el < 0]
    ground_d = ground_z / np.tan(el)  # positive: where each downward beam meets the ground
    cols = np.linspace(-math.pi, math.pi, target.columns, endpoint=False) + math.pi / target.columns
    col_sector = (np.floor((cols + math.pi) / (2 * math.pi) * bins).astype(np.int64)) % bins
    D, A = np.meshgrid(ground_d, cols, indexing="ij")
    S = np.broadcast_to(col_sector, D.shape)
    want = ok[S] & (D < first[S] - 0.5 * np.diff(np.sort(ground_d)).min(initial=0.0))
    if not want.any():
        return cloud
    d, a, s = D[want], A[want], S[want]
    extra = np.zeros(len(d), dtype=cloud.dtype)
    extra["x"], extra["y"], extra["z"] = d * np.cos(a), d * np.sin(a), ground_z
    if has_int:
        extra["intensity"] = inten[s]
    return np.concatenate([cloud, extra])


def intensity_p90(cloud: np.ndarray) -> float | None:
    """The 90th percentile of a cloud's finite ``intensity`` values (None without the field or values)."""
    if "intensity" not in (cloud.dtype.names or ()):
        return None
    v = np.asarray(cloud["intensity"], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.percentile(v, 90)) if len(v) else None


def intensity_scale_for(p90: float | None, reference_p90: float, tolerance: float) -> float:
    """The factor that brings a sensor's 90th intensity percentile ``p90`` to the canonical ``reference_p90``, or 1.0
    when it is already within a factor ``tolerance`` of it (or unknown, or zero)."""
    if p90 is None or not p90 > 0:
        return 1.0
    ratio = reference_p90 / p90
    return 1.0 if 1.0 / tolerance <= ratio <= tolerance else float(ratio)


# --------------------------------------------------------------------------------------------------------- camera
class CameraWarp:
    """Resample images of camera ``src`` (intrinsics and mount) into the view of camera ``dst``: the canonical view's
    pixel rays, turned by the mounts' relative rotation, looked up in the source image (OpenCV ``remap``, bilinear,
    lens distortion removed). The positional offset between the mounts is not corrected (it would need depth)."""

    def __init__(self, src: CameraIntrinsics, dst: CameraIntrinsics, src_mount: SensorMount | None = None,
                 dst_mount: SensorMount | None = None, border: str = "replicate") -> None:
        if border not in CAMERA_BORDERS:
            raise ConfigError("rig.camera_border", border, " | ".join(CAMERA_BORDERS))
        self.src, self.dst, self.border = src, dst, border
        # rotation dst-optical -> src-optical: a ray d in dst's optical frame is R_s^T R_d d in src's
        rel = np.eye(3)
        if src_mount is not None and dst_mount is not None:
            rel = src_mount.matrix.T @ dst_mount.matrix
        # shrink a much larger source first (area filter), so remap's bilinear taps do not alias
        self.prescale = min(1.0, 1.5 * dst.fx / src.fx, 1.5 * dst.fy / src.fy)
        k = src.K.copy()
        if self.prescale < 1.0:
            s = self.prescale
            k[0, 0] *= s
            k[1, 1] *= s
            k[0, 2] = (k[0, 2] + 0.5) * s - 0.5
            k[1, 2] = (k[1, 2] + 0.5) * s - 0.5
        self._src_size = (max(1, int(round(src.width * self.prescale))), max(1, int(round(src.height * self.prescale))))
        dist = np.asarray(src.distortion, dtype=np.float64) if src.distortion else None
        # initUndistortRectifyMap: for each dst pixel, the ray K_dst^-1 (u, v, 1) rotated by R^-1 is projected with
        # the source's K and distortion; R maps src -> dst, so R^-1 = rel
        self.map_x, self.map_y = cv2.initUndistortRectifyMap(k, dist, rel.T, dst.K, (dst.width, dst.height),
                                                             cv2.CV_32FC1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[0] != self.src.height or img.shape[1] != self.src.width:
            raise ConversionError("camera image", "shape",
                                  f"{img.shape[:2]} does not match camera_info {self.src.height}x{self.src.width}")
        if self.prescale < 1.0:
            img = cv2.resize(img, self._src_size, interpolation=cv2.INTER_AREA)
        if self.border == "replicate":
            mode, value = cv2.BORDER_REPLICATE, 0
        elif self.border == "reflect":  # the image mirrored at its edges
            mode, value = cv2.BORDER_REFLECT_101, 0
        elif self.border == "mean":  # the normalisation's mean colour: zero after CameraPreprocessing
            mode, value = cv2.BORDER_CONSTANT, (124, 116, 104)
        else:
            mode, value = cv2.BORDER_CONSTANT, (0, 0, 0)
        return cv2.remap(img, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=mode, borderValue=value)


# --------------------------------------------------------------------------------------------------------- adapter
@dataclass
class RigAdapter:
    """One sensor's data -> the canonical sensor's, for one modality (see the module text). ``sensor`` holds what is
    known of this sensor (None / missing parts: that step is skipped; a LiDAR layout is estimated from the first scan
    when not given). Callable on what :mod:`core.preprocess` takes: a structured cloud or an ``H x W x 3`` image."""

    modality: Modality
    sensor: SensorRig
    options: RigOptions = field(default_factory=RigOptions)
    canonical: SensorRig = CANONICAL_RIG
    _layout: LidarLayout | None = field(default=None, init=False, repr=False)
    _warps: dict[int, CameraWarp] = field(default_factory=dict, init=False, repr=False)  # per JPEG reduction
    _intensity_scale: float | None = field(default=None, init=False, repr=False)
    _layout_tries: int = field(default=0, init=False, repr=False)

    LAYOUT_TRIES = 5  # scans of 100+ points a layout is estimated from before it is taken as unknown

    def __post_init__(self) -> None:
        self.modality = Modality(self.modality)
        self._layout = self.sensor.lidar_layout

    @property
    def is_identity(self) -> bool:
        """True when this sensor is the canonical one as far as the enabled steps can tell (or all are off)."""
        o, s, c = self.options, self.sensor, self.canonical
        if not o.enabled:
            return True
        mount = s.mount(self.modality)
        moved = o.mount and mount is not None and not mount.close_to(c.mount(self.modality))
        if self.modality is Modality.CAMERA:  # only the orientation can be corrected (a position needs depth)
            turned = o.mount and mount is not None and np.abs(mount.matrix - c.camera_mount.matrix).max() > 1e-3
            return not (o.camera_view and s.camera is not None and (not s.camera.close_to(c.camera) or turned))
        if self.modality is Modality.RADAR:
            return not moved and not (o.crop_fov and s.radar_hfov_deg is not None
                                      and s.radar_hfov_deg > c.radar_hfov_deg + 1e-6)
        return False  # a LiDAR's layout and intensity are only known from its data

    def __call__(self, data: np.ndarray, reduction: int = 1) -> np.ndarray:
        """The data at the canonical rig. Anything but a structured cloud (LiDAR, radar) or an ``H x W x 3`` image
        (camera) passes through unchanged (a plain array carries no field names to move). ``reduction``: a camera
        JPEG decoded at 1/``reduction`` of its size (``core.decode.Frame.reduction``): the intrinsics scale with it."""
        o = self.options
        if not o.enabled or not isinstance(data, np.ndarray):
            return data
        if self.modality is Modality.CAMERA:
            return self._camera(data, reduction) if data.ndim == 3 else data
        if data.dtype.names is None:
            return data
        if self.modality is Modality.RADAR:
            return self._radar(data)
        return self._lidar(data)

    def _camera(self, image: np.ndarray, reduction: int = 1) -> np.ndarray:
        o, s, c = self.options, self.sensor, self.canonical
        if not o.camera_view or s.camera is None or self.is_identity:
            return image
        warp = self._warps.get(reduction)
        if warp is None:
            rot = o.mount and s.camera_mount is not None
            dst = c.camera
            if not o.camera_pad and s.camera.hfov_deg < dst.hfov_deg:  # the canonical size, this camera's view
                dst = CameraIntrinsics.pinhole(dst.width, dst.height, s.camera.hfov_deg)
            warp = self._warps[reduction] = CameraWarp(s.camera.reduced(reduction), dst,
                                                       s.camera_mount if rot else None,
                                                       c.camera_mount if rot else None, o.camera_border)
        return warp(image)

    def _radar(self, cloud: np.ndarray) -> np.ndarray:
        o, s, c = self.options, self.sensor, self.canonical
        if o.mount and s.radar_mount is not None and not s.radar_mount.close_to(c.radar_mount):
            cloud = move_points_between(cloud, s.radar_mount, c.radar_mount)
        if o.crop_fov and c.radar_hfov_deg is not None and (s.radar_hfov_deg is None
                                                             or s.radar_hfov_deg > c.radar_hfov_deg + 1e-6):
            # a margin: the canonical radar's own returns reach past its edge by its azimuth noise
            cloud = crop_azimuth(cloud, c.radar_hfov_deg + 2 * RADAR_FOV_MARGIN_DEG)
        return cloud

    def lidar_layout(self, cloud: np.ndarray) -> LidarLayout | None:
        """This LiDAR's layout: given, or estimated once from the first scan large enough. A sensor whose first
        :attr:`LAYOUT_TRIES` scans of 100 points or more do not look like a spinning scanner's (a solid-state LiDAR,
        scans of random points) has no layout: it is not estimated again on every scan (about 14 ms for 100k
        points)."""
        if self._layout is None and self._layout_tries < self.LAYOUT_TRIES:
            if len(cloud) >= 100:
                self._layout_tries += 1
            self._layout = estimate_lidar_layout(cloud)
        return self._layout

    def _lidar(self, cloud: np.ndarray) -> np.ndarray:
        o, s, c = self.options, self.sensor, self.canonical
        if "x" in (cloud.dtype.names or ()) and len(cloud):
            finite = _finite_xyz(cloud, "lidar cloud")
            if not finite.all():  # dropped here as the preprocessing would drop them
                cloud = cloud[finite]
        if o.intensity != "keep" and "intensity" in (cloud.dtype.names or ()):
            if o.intensity == "drop":
                cloud = cloud.copy()
                cloud["intensity"] = 0.0
            elif c.lidar_intensity_p90 is not None:
                if self._intensity_scale is None:
                    self._intensity_scale = intensity_scale_for(intensity_p90(cloud), c.lidar_intensity_p90,
                                                                o.intensity_tolerance)
                if self._intensity_scale != 1.0:
                    cloud = cloud.copy()
                    cloud["intensity"] = cloud["intensity"] * self._intensity_scale
        if (o.density or o.thin) and c.lidar_layout is not None:
            layout = self.lidar_layout(cloud)
            if layout is not None:
                denser = (layout.elevation_step_deg * layout.azimuth_step_deg
                          < c.lidar_layout.elevation_step_deg * c.lidar_layout.azimuth_step_deg)
                if (o.thin if denser else o.density):
                    cloud = match_lidar_density(cloud, layout, c.lidar_layout)
        moved = o.mount and s.lidar_mount is not None and not s.lidar_mount.close_to(c.lidar_mount)
        if moved:
            cloud = move_points_between(cloud, s.lidar_mount, c.lidar_mount)
        if o.ground_fill and c.lidar_layout is not None and c.lidar_mount is not None:
            cloud = fill_ground(cloud, c.lidar_layout, -c.lidar_mount.translation[2])
        if o.crop_fov and moved and c.lidar_layout is not None:
            half = c.lidar_layout.elevation_step_deg / 2.0
            cloud = crop_elevation(cloud, c.lidar_layout.vfov_min_deg - half, c.lidar_layout.vfov_max_deg + half)
        return cloud


def with_options(adapter: RigAdapter, **changes: Any) -> RigAdapter:
    """A fresh adapter for the same sensor with some options changed."""
    return RigAdapter(adapter.modality, adapter.sensor, replace(adapter.options, **changes), adapter.canonical)


def rig_adapters(sensor: SensorRig, modalities: Any, options: RigOptions | None = None,
                 canonical: SensorRig = CANONICAL_RIG) -> dict[Modality, RigAdapter]:
    """One fresh :class:`RigAdapter` per modality for the sensors of ``sensor``."""
    return {Modality(m): RigAdapter(Modality(m), sensor, options or RigOptions(), canonical) for m in modalities}
