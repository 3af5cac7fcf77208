"""Preprocessing, defined once: raw sensor arrays -> the float32 CHW tensors the encoders take.

Training (``cmr_fusion_ros.training``) and the runtime (``cmr_fusion_ros.core.encoder``) both call these functions, so
a model sees at run time exactly the tensors it was trained on. Every parameter lives in a frozen dataclass that
validates itself and is written into the model card (``to_dict``) and rebuilt from it (``preprocessing_from_dict``).

Inputs:

- camera: ``H x W x 3`` uint8 RGB image (what ``core.image.decode_image`` returns for ``rgb8``).
- LiDAR: a structured array with fields ``x, y, z`` and optionally ``intensity`` (``core.pointcloud.decode_cloud``),
  or a plain ``(N, >=3)`` float array whose columns are ``x, y, z[, intensity]``; points in the sensor frame.
- radar: a structured array with fields ``x, y, z, doppler, rcs`` or a plain ``(N, 5)`` array in that column order.

Outputs are ``(C, H, W)`` float32 arrays; ``batch`` stacks several into ``(N, C, H, W)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, Sequence

import cv2
import numpy as np

from cmr_fusion_ros.core.accumulate import ScanAccumulator, move_points
from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.types import MAX_LIDAR_VIEWS, Modality
from cmr_fusion_ros.core.validate import finite, positive_float, positive_int, require

__all__ = [
    "CameraPreprocessing",
    "LidarBevFrontPreprocessing",
    "LidarBevPreprocessing",
    "Preprocessing",
    "RadarBevPreprocessing",
    "accumulator_for",
    "batch",
    "default_preprocessing",
    "ground_height",
    "mirror",
    "points_columns",
    "preprocessing_from_dict",
    "turned_views",
]


class Preprocessing(Protocol):
    """What every preprocessing dataclass offers."""

    modality: Modality

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    def mirror_segments(self) -> tuple[tuple[int, int], ...]:
        """Column ranges ``[start, stop)`` of the tensor that each show the surroundings with left (+y) on the left:
        the tensor of the world mirrored left-right (y -> -y) has each range reversed (:func:`mirror`)."""
        ...

    def __call__(self, data: np.ndarray) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


def points_columns(data: np.ndarray, names: Sequence[str], *, required: int, what: str) -> np.ndarray:
    """Return an ``(N, len(names))`` float32 array from a structured array (by field name) or a plain 2-D array.

    Only the first ``required`` names must be present; a missing optional field is filled with zeros.
    """
    return np.ascontiguousarray(_columns(data, names, required=required, what=what).T)


def _columns(data: np.ndarray, names: Sequence[str], *, required: int, what: str) -> np.ndarray:
    """:func:`points_columns` transposed: a C-contiguous ``(len(names), N)`` float32 array, one row per field.

    The per-field rows are contiguous, which the grids below need (elementwise work and ``np.compress`` on
    contiguous rows are several times faster than on strided columns).
    """
    if data.dtype.names is not None:
        n = data.shape[0] if data.ndim else 0
        out = np.zeros((len(names), n), dtype=np.float32)
        for i, name in enumerate(names):
            if name in data.dtype.names:
                out[i] = data[name].reshape(-1)
            elif i < required:
                raise ConversionError(what, name, f"field missing; the cloud has fields {list(data.dtype.names)}")
        return out
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] < required:
        raise ConversionError(what, "points", f"expected an (N, >={required}) array, got shape {arr.shape}")
    out = np.empty((len(names), arr.shape[0]), dtype=np.float32)
    k = min(arr.shape[1], len(names))
    out[:k] = arr[:, :k].T
    out[k:] = 0.0
    return out


def _finite_columns(cols: np.ndarray) -> np.ndarray:
    """The points (columns of a ``(C, N)`` array) whose every field is finite, in their original order."""
    keep = np.isfinite(cols).all(axis=0)
    return cols if keep.all() else np.compress(keep, cols, axis=1)


def _lidar_points(cloud: np.ndarray) -> np.ndarray:
    """A LiDAR cloud's finite points as a ``(4, N)`` float32 array, rows ``x, y, z, intensity``."""
    return _finite_columns(_columns(cloud, ("x", "y", "z", "intensity"), required=3, what="lidar cloud"))


@dataclass(frozen=True, slots=True)
class CameraPreprocessing:
    """Resize (area interpolation) to ``width x height``, scale to [0, 1], normalise per channel, HWC -> CHW."""

    width: int = 96
    height: int = 72
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    modality: Modality = Modality.CAMERA

    def __post_init__(self) -> None:
        positive_int("camera.width", self.width)
        positive_int("camera.height", self.height)
        for key, val in (("camera.mean", self.mean), ("camera.std", self.std)):
            require(
                isinstance(val, (tuple, list)) and len(val) == 3, key, val, "three numbers (R, G, B)"
            )
            for v in val:
                finite(key, v)
        for v in self.std:
            positive_float("camera.std", v)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        require(self.modality is Modality.CAMERA, "camera.modality", self.modality, "camera")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.height, self.width)

    @property
    def mirror_segments(self) -> tuple[tuple[int, int], ...]:
        return ((0, self.width),)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ConversionError("camera image", "shape", f"expected H x W x 3 RGB, got {img.shape}")
        if img.dtype != np.uint8:
            raise ConversionError("camera image", "dtype", f"expected uint8, got {img.dtype}")
        if img.shape[0] != self.height or img.shape[1] != self.width:
            img = cv2.resize(img, (self.width, self.height), interpolation=cv2.INTER_AREA)
        x = img.astype(np.float32) * np.float32(1.0 / 255.0)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self, "camera_rgb")


GROUND_RANGE_M = (3.0, 25.0)  # horizontal range of the points the ground height is estimated from
GROUND_PERCENTILE = 10.0
GROUND_MIN_POINTS = 50
OCCUPANCY_MODES = ("count", "binary")


def ground_height(pts: np.ndarray, range_m: tuple[float, float] = GROUND_RANGE_M,
                  percentile: float = GROUND_PERCENTILE, min_points: int = GROUND_MIN_POINTS) -> float | None:
    """A scan's ground height in its own frame: by default the 10th percentile of the heights of the points 3-25 m
    away horizontally (most returns of a driving vehicle's LiDAR there are ground), or None with fewer than 50 such
    points (``cmr_fusion_ros.core.domain`` asks for its own percentile and band). ``pts``: ``(>=3, N)`` rows
    ``x, y, z, ...``."""
    d2 = pts[0] * pts[0] + pts[1] * pts[1]
    lo, hi = range_m
    near = (d2 >= lo * lo) & (d2 <= hi * hi)
    if int(near.sum()) < max(1, min_points):
        return None
    return float(np.percentile(pts[2][near], percentile))


def _bev_cells(
    x: np.ndarray, y: np.ndarray, x_min: float, x_max: float, y_half: float, rows: int, cols: int,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flat cell index of every point, ``rows * cols`` for a point outside ``x in [x_min, x_max), y in [-y_half,
    y_half)`` (or not in ``keep``, if given), and the kept mask. Counting into ``rows * cols + 1`` bins and dropping
    the last one needs no copy of the kept points' fields (a 100k-point scan's grid: about 1 ms less).

    Row 0 is the far +x edge (ahead of the sensor), column 0 the +y edge (left), like an image seen from above.
    """
    if keep is not None and not keep.all():  # the points left out take no part in the arithmetic (no overflow
        x, y = np.where(keep, x, 0), np.where(keep, y, 0)  # warning from them)
    row_f = (x_max - x) * (rows / (x_max - x_min))
    col_f = (y_half - y) * (cols / (2.0 * y_half))
    # on the unfloored values: floor(v) >= 0 iff v >= 0 and floor(v) < n iff v < n (n whole; NaN fails both): the
    # cells of flooring first
    inside = (row_f >= 0) & (row_f < rows) & (col_f >= 0) & (col_f < cols)
    keep = inside if keep is None else keep & inside
    idx = np.floor(row_f).astype(np.int64)  # (a far point's cast may warn, as it always did; replaced below)
    idx *= cols
    idx += np.floor(col_f).astype(np.int64)
    np.putmask(idx, ~keep, rows * cols)
    return idx, keep


def _bev_indices(
    x: np.ndarray, y: np.ndarray, x_min: float, x_max: float, y_half: float, rows: int, cols: int
) -> tuple[np.ndarray, np.ndarray]:
    """The kept points' flat cell indices (:func:`_bev_cells`) and the kept mask."""
    idx, keep = _bev_cells(x, y, x_min, x_max, y_half, rows, cols)
    return (idx if keep.all() else np.compress(keep, idx)), keep


def _check_extent(prefix: str, obj: Any) -> None:
    positive_int(f"{prefix}.rows", obj.rows)
    positive_int(f"{prefix}.cols", obj.cols)
    finite(f"{prefix}.x_min_m", obj.x_min_m)
    finite(f"{prefix}.x_max_m", obj.x_max_m)
    require(obj.x_max_m > obj.x_min_m, f"{prefix}.x_max_m", obj.x_max_m, f"> x_min_m ({obj.x_min_m})")
    positive_float(f"{prefix}.y_half_m", obj.y_half_m)


def _check_bev_options(prefix: str, obj: Any) -> None:
    require(obj.occupancy in OCCUPANCY_MODES, f"{prefix}.occupancy", obj.occupancy, " | ".join(OCCUPANCY_MODES))
    finite(f"{prefix}.ground_clearance_m", obj.ground_clearance_m)
    require(0 <= obj.ground_clearance_m <= 5, f"{prefix}.ground_clearance_m", obj.ground_clearance_m,
            "metres in [0, 5] (0: ground kept)")


@dataclass(frozen=True, slots=True)
class LidarBevPreprocessing:
    """LiDAR bird's-eye grid: ``rows x cols`` cells over ``x in [x_min_m, x_max_m)``, ``y in [-y_half_m, y_half_m)``
    (sensor frame, x forward, y left; row 0 is the far front edge, column 0 the left edge).

    Channels: 0 occupancy ``log1p(count) / log1p(count_scale)`` clipped to 1 (``occupancy: binary``: 1 for every
    cell with a point); 1 highest point, ``(z - z_min) / (z_max - z_min)`` clipped to [0, 1] (0 for empty cells); 2
    mean intensity divided by ``intensity_scale``. Points with z outside ``[z_min_m, z_max_m]`` or non-finite
    coordinates are dropped; with ``ground_clearance_m`` > 0 also the points less than that above the scan's ground
    (:func:`ground_height`). Both options make the grid depend less on the LiDAR: how densely a sensor's rings cover
    the ground, and how many returns an object gets, follow its beam count and mount, not the place.
    """

    rows: int = 64
    cols: int = 64
    x_min_m: float = -40.0
    x_max_m: float = 40.0
    y_half_m: float = 40.0
    z_min_m: float = -3.0
    z_max_m: float = 9.0
    count_scale: float = 32.0
    intensity_scale: float = 255.0
    occupancy: str = "count"  # count | binary
    ground_clearance_m: float = 0.0  # points less than this above the scan's ground left out (0: none)
    modality: Modality = Modality.LIDAR

    def __post_init__(self) -> None:
        _check_extent("lidar", self)
        finite("lidar.z_min_m", self.z_min_m)
        finite("lidar.z_max_m", self.z_max_m)
        require(self.z_max_m > self.z_min_m, "lidar.z_max_m", self.z_max_m, f"> z_min_m ({self.z_min_m})")
        positive_float("lidar.count_scale", self.count_scale)
        positive_float("lidar.intensity_scale", self.intensity_scale)
        _check_bev_options("lidar", self)
        require(self.modality is Modality.LIDAR, "lidar.modality", self.modality, "lidar")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.rows, self.cols)

    @property
    def mirror_segments(self) -> tuple[tuple[int, int], ...]:
        return ((0, self.cols),)  # columns run from +y to -y

    def __call__(self, cloud: np.ndarray) -> np.ndarray:
        return self._from_points(_lidar_points(cloud))

    def _from_points(self, pts: np.ndarray) -> np.ndarray:
        """The tensor of finite points given as a ``(4, N)`` array (``_lidar_points``)."""
        return self._grid(pts)

    def _grid(self, pts: np.ndarray) -> np.ndarray:
        """The grid of finite points given as a ``(4, N)`` float32 array, one row per field ``x, y, z, intensity``."""
        z = pts[2]
        in_z = (z >= self.z_min_m) & (z <= self.z_max_m)
        if self.ground_clearance_m > 0:
            ground = ground_height(pts)
            if ground is not None:
                in_z &= z >= ground + self.ground_clearance_m
        n = self.rows * self.cols
        # one mask (heights and extent); points left out go to an extra last cell, dropped at the end
        idx, _ = _bev_cells(pts[0], pts[1], self.x_min_m, self.x_max_m, self.y_half_m, self.rows, self.cols, in_z)
        count = np.bincount(idx, minlength=n + 1)[:n].astype(np.float32)
        height = np.zeros(n + 1, dtype=np.float32)
        zn = np.clip((pts[2] - self.z_min_m) / (self.z_max_m - self.z_min_m), 0.0, 1.0).astype(np.float32)
        # highest point per cell (empty cells stay 0; the occupancy channel tells them apart)
        np.maximum.at(height, idx, zn)
        height = height[:n]
        inten = np.bincount(idx, weights=pts[3], minlength=n + 1)[:n].astype(np.float32)
        occupied = count > 0
        inten[occupied] /= count[occupied] * np.float32(self.intensity_scale)
        if self.occupancy == "binary":
            occ = occupied.astype(np.float32)
        else:
            occ = np.minimum(np.log1p(count) / np.float32(math.log1p(self.count_scale)), 1.0).astype(np.float32)
        out = np.stack([occ, height, inten]).reshape(3, self.rows, self.cols)
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return _without_default_bev_options(_to_dict(self, "lidar_bev"))


@dataclass(frozen=True, slots=True)
class LidarBevFrontPreprocessing:
    """LiDAR as two images side by side in one ``(3, rows, rows + fv_cols)`` tensor.

    Left: the bird's-eye grid of :class:`LidarBevPreprocessing` (``rows x rows`` over ``x in [-half_extent_m,
    half_extent_m)``, ``y`` likewise; channels occupancy, highest point, mean intensity). Right: a front view seen
    like the camera: columns ``(0.5 - (y / x) / (2 tan(fv_hfov_deg / 2))) * fv_cols`` (pinhole, x forward, left
    first), rows equiangular in elevation from ``fv_elev_max_deg`` (top) to ``fv_elev_min_deg``, computed at
    ``fv_rows`` and repeated to ``rows``; each pixel keeps its closest point: channels ``1 - range / fv_max_range_m``
    (0 = no return), its height ``(z - z_min) / (z_max - z_min)`` and its intensity / ``intensity_scale``.

    The front view gives the encoder the camera's geometry (what is left, right, near, tall); the bird's-eye half
    gives the layout around the vehicle, in the same metric grid as the radar's.
    """

    rows: int = 64
    half_extent_m: float = 40.0
    z_min_m: float = -3.0
    z_max_m: float = 9.0
    count_scale: float = 32.0
    intensity_scale: float = 255.0
    fv_cols: int = 64
    fv_rows: int = 32
    fv_hfov_deg: float = 90.0
    fv_elev_min_deg: float = -25.0
    fv_elev_max_deg: float = 15.0
    fv_max_range_m: float = 80.0
    occupancy: str = "count"  # the bird's-eye half's occupancy: count | binary (see LidarBevPreprocessing)
    ground_clearance_m: float = 0.0  # the bird's-eye half leaves out points this close above the ground (0: none)
    modality: Modality = Modality.LIDAR

    def __post_init__(self) -> None:
        positive_int("lidar.rows", self.rows)
        positive_float("lidar.half_extent_m", self.half_extent_m)
        finite("lidar.z_min_m", self.z_min_m)
        finite("lidar.z_max_m", self.z_max_m)
        require(self.z_max_m > self.z_min_m, "lidar.z_max_m", self.z_max_m, f"> z_min_m ({self.z_min_m})")
        positive_float("lidar.count_scale", self.count_scale)
        positive_float("lidar.intensity_scale", self.intensity_scale)
        positive_int("lidar.fv_cols", self.fv_cols)
        positive_int("lidar.fv_rows", self.fv_rows)
        require(self.rows % self.fv_rows == 0, "lidar.fv_rows", self.fv_rows, f"a divisor of rows ({self.rows})")
        positive_float("lidar.fv_hfov_deg", self.fv_hfov_deg)
        require(self.fv_hfov_deg < 170, "lidar.fv_hfov_deg", self.fv_hfov_deg, "0 < fv_hfov_deg < 170")
        finite("lidar.fv_elev_min_deg", self.fv_elev_min_deg)
        finite("lidar.fv_elev_max_deg", self.fv_elev_max_deg)
        require(
            -90 < self.fv_elev_min_deg < self.fv_elev_max_deg < 90,
            "lidar.fv_elev_max_deg",
            self.fv_elev_max_deg,
            f"-90 < fv_elev_min_deg ({self.fv_elev_min_deg}) < fv_elev_max_deg < 90",
        )
        positive_float("lidar.fv_max_range_m", self.fv_max_range_m)
        _check_bev_options("lidar", self)
        require(self.modality is Modality.LIDAR, "lidar.modality", self.modality, "lidar")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.rows, self.rows + self.fv_cols)

    @property
    def mirror_segments(self) -> tuple[tuple[int, int], ...]:
        # two images side by side: each is mirrored in place (reversing the whole width would swap them)
        return ((0, self.rows), (self.rows, self.rows + self.fv_cols))

    def _bev(self) -> LidarBevPreprocessing:
        h = self.half_extent_m
        return LidarBevPreprocessing(
            rows=self.rows, cols=self.rows, x_min_m=-h, x_max_m=h, y_half_m=h, z_min_m=self.z_min_m,
            z_max_m=self.z_max_m, count_scale=self.count_scale, intensity_scale=self.intensity_scale,
            occupancy=self.occupancy, ground_clearance_m=self.ground_clearance_m,
        )

    def front_view(self, pts: np.ndarray) -> np.ndarray:
        """The ``(3, fv_rows, fv_cols)`` front view of finite ``(N, 4)`` points ``x, y, z, intensity``."""
        return self._front_view(np.ascontiguousarray(np.asarray(pts)[:, :4].T))

    def _front_view(self, pts: np.ndarray) -> np.ndarray:
        """:meth:`front_view` of points given as a ``(4, N)`` array, one row per field ``x, y, z, intensity``."""
        rows, cols = self.fv_rows, self.fv_cols
        out = np.zeros((3, rows * cols), dtype=np.float32)
        front = pts[0] > 0.1
        if not front.all():
            pts = np.compress(front, pts, axis=1)
        x, y, z = pts[0], pts[1], pts[2]
        ground2 = x * x + y * y
        rng = np.sqrt(ground2 + z * z)
        half = math.tan(math.radians(self.fv_hfov_deg) / 2.0)
        col = np.floor((0.5 - (y / x) / (2.0 * half)) * cols).astype(np.int64)
        # arctan2 stays: comparing z / ground with the tangents of the row borders could round differently at a
        # border, and the models were trained on these exact row indices
        elev = np.degrees(np.arctan2(z, np.sqrt(ground2)))
        span = self.fv_elev_max_deg - self.fv_elev_min_deg
        row = np.floor((self.fv_elev_max_deg - elev) / span * rows).astype(np.int64)
        keep = (col >= 0) & (col < cols) & (row >= 0) & (row < rows) & (rng < self.fv_max_range_m)
        if not keep.any():
            return out.reshape(3, rows, cols)
        kept = np.flatnonzero(keep)
        row *= cols
        row += col  # the flat pixel (it may wrap around for dropped points, which are not used)
        pix, r = row[kept], rng[kept]
        # Each pixel keeps its nearest point and, among equally near ones, the first in the input (what a stable
        # sort by pixel then range picks): the minimum range per pixel, then the first point that reaches it.
        r_min = np.full(rows * cols, np.inf, dtype=r.dtype)
        np.minimum.at(r_min, pix, r)
        nearest = np.flatnonzero(r == r_min[pix])
        _, first = np.unique(pix[nearest], return_index=True)
        sel = nearest[first]
        pix, r, sel_pts = pix[sel], r[sel], kept[sel]
        out[0, pix] = 1.0 - r / self.fv_max_range_m
        out[1, pix] = np.clip((z[sel_pts] - self.z_min_m) / (self.z_max_m - self.z_min_m), 0.0, 1.0)
        out[2, pix] = np.clip(pts[3][sel_pts] / self.intensity_scale, 0.0, None)
        return out.reshape(3, rows, cols)

    def __call__(self, cloud: np.ndarray) -> np.ndarray:
        return self._from_points(_lidar_points(cloud))

    def _from_points(self, pts: np.ndarray) -> np.ndarray:
        """The tensor of finite points given as a ``(4, N)`` array (``_lidar_points``)."""
        bev = self._bev()._grid(pts)
        fv = np.repeat(self._front_view(pts), self.rows // self.fv_rows, axis=1)
        return np.ascontiguousarray(np.concatenate([bev, fv], axis=2), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return _without_default_bev_options(_to_dict(self, "lidar_bev_front"))


@dataclass(frozen=True, slots=True)
class RadarBevPreprocessing:
    """Radar bird's-eye grid: ``rows x cols`` cells over ``x in [x_min_m, x_max_m)``, ``y in [-y_half_m, y_half_m)``
    (sensor frame; the default covers the front of a forward-looking radar on the same 1.25 m grid as the front
    half of the LiDAR bird's-eye view).

    Channels: 0 occupancy ``log1p(count) / log1p(count_scale)`` clipped to 1; 1 mean doppler divided by
    ``doppler_scale_mps`` clipped to [-1, 1]; 2 strongest RCS ``(rcs - rcs_min_dbsm) / (rcs_max_dbsm - rcs_min_dbsm)``
    clipped to [0, 1] (0 for empty cells).

    ``scans > 1``: the grid is made from the scan merged with ``scans - 1`` earlier scans ``scan_spacing_s`` apart,
    moved by the odometry (:class:`cmr_fusion_ros.core.accumulate.ScanAccumulator`, built by :meth:`accumulator`;
    whoever feeds scans in time order with poses calls it before this preprocessing). These three keys are written
    into the card only when ``scans > 1``, so single-scan cards are unchanged.
    """

    rows: int = 32
    cols: int = 64
    x_min_m: float = 0.0
    x_max_m: float = 40.0
    y_half_m: float = 40.0
    count_scale: float = 4.0
    doppler_scale_mps: float = 20.0
    rcs_min_dbsm: float = -20.0
    rcs_max_dbsm: float = 30.0
    scans: int = 1
    scan_spacing_s: float = 0.5
    scan_tolerance_s: float = 0.15
    modality: Modality = Modality.RADAR

    def __post_init__(self) -> None:
        _check_extent("radar", self)
        positive_float("radar.count_scale", self.count_scale)
        positive_float("radar.doppler_scale_mps", self.doppler_scale_mps)
        finite("radar.rcs_min_dbsm", self.rcs_min_dbsm)
        finite("radar.rcs_max_dbsm", self.rcs_max_dbsm)
        require(
            self.rcs_max_dbsm > self.rcs_min_dbsm,
            "radar.rcs_max_dbsm",
            self.rcs_max_dbsm,
            f"> rcs_min_dbsm ({self.rcs_min_dbsm})",
        )
        require(self.modality is Modality.RADAR, "radar.modality", self.modality, "radar")
        ScanAccumulator(self.scans, self.scan_spacing_s, self.scan_tolerance_s)  # validates the three keys

    def accumulator(self) -> ScanAccumulator | None:
        """A fresh multi-scan accumulator for one sensor (None for single-scan preprocessing)."""
        return ScanAccumulator(self.scans, self.scan_spacing_s, self.scan_tolerance_s) if self.scans > 1 else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.rows, self.cols)

    @property
    def mirror_segments(self) -> tuple[tuple[int, int], ...]:
        return ((0, self.cols),)  # columns run from +y to -y

    def __call__(self, cloud: np.ndarray) -> np.ndarray:
        pts = _finite_columns(_columns(cloud, ("x", "y", "z", "doppler", "rcs"), required=5, what="radar cloud"))
        n = self.rows * self.cols
        idx, keep = _bev_indices(pts[0], pts[1], self.x_min_m, self.x_max_m, self.y_half_m, self.rows, self.cols)
        doppler, rcs_dbsm = np.compress(keep, pts[3:5], axis=1)
        count = np.bincount(idx, minlength=n).astype(np.float32)
        dop = np.bincount(idx, weights=doppler, minlength=n).astype(np.float32)
        occupied = count > 0
        dop[occupied] /= count[occupied] * np.float32(self.doppler_scale_mps)
        dop = np.clip(dop, -1.0, 1.0)
        rcs = np.zeros(n, dtype=np.float32)
        rn = np.clip((rcs_dbsm - self.rcs_min_dbsm) / (self.rcs_max_dbsm - self.rcs_min_dbsm), 0.0, 1.0)
        np.maximum.at(rcs, idx, rn.astype(np.float32))
        occ = np.minimum(np.log1p(count) / np.float32(math.log1p(self.count_scale)), 1.0).astype(np.float32)
        out = np.stack([occ, dop, rcs]).reshape(3, self.rows, self.cols)
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        d = _to_dict(self, "radar_bev")
        if self.scans == 1:
            for key in ("scans", "scan_spacing_s", "scan_tolerance_s"):
                d["params"].pop(key)
        return d


_KINDS: dict[str, type] = {
    "camera_rgb": CameraPreprocessing,
    "lidar_bev": LidarBevPreprocessing,
    "lidar_bev_front": LidarBevFrontPreprocessing,
    "radar_bev": RadarBevPreprocessing,
}


def _to_dict(obj: Any, kind: str) -> dict[str, Any]:
    d = asdict(obj)
    d.pop("modality")
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return {"kind": kind, "modality": obj.modality.value, "params": d}


def _without_default_bev_options(d: dict[str, Any]) -> dict[str, Any]:
    """A LiDAR card's dict without ``occupancy`` / ``ground_clearance_m`` at their defaults: cards and training caches
    of models from before these options stay as they were (a card without them means count and 0)."""
    if d["params"].get("occupancy") == "count":
        del d["params"]["occupancy"]
    if d["params"].get("ground_clearance_m") == 0:
        del d["params"]["ground_clearance_m"]
    return d


def preprocessing_from_dict(d: dict[str, Any]) -> Preprocessing:
    """Rebuild a preprocessing object from ``to_dict()`` output (as stored in a model card)."""
    if not isinstance(d, dict):
        raise ConfigError("preprocessing", d, "a mapping with 'kind' and 'params'")
    kind = d.get("kind")
    if kind not in _KINDS:
        raise ConfigError("preprocessing.kind", kind, " | ".join(_KINDS))
    cls = _KINDS[kind]
    params = dict(d.get("params") or {})
    known = {f.name for f in fields(cls)} - {"modality"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"preprocessing.params.{unknown[0]}", params[unknown[0]], " | ".join(sorted(known)))
    for k, v in params.items():
        if isinstance(v, list):
            params[k] = tuple(v)
    return cls(**params)


def default_preprocessing(modality: Modality) -> Preprocessing:
    """The preprocessing the shipped models were trained with, per modality (the radar model merges 3 scans 0.5 s
    apart; a card without the ``scans`` keys means one scan)."""
    return {
        Modality.CAMERA: CameraPreprocessing,
        Modality.LIDAR: LidarBevFrontPreprocessing,
        Modality.RADAR: lambda: RadarBevPreprocessing(scans=3, scan_spacing_s=0.5, scan_tolerance_s=0.15),
    }[Modality(modality)]()


def accumulator_for(pre: Any) -> ScanAccumulator | None:
    """A fresh scan accumulator when ``pre`` merges several scans (multi-scan radar), else None."""
    make = getattr(pre, "accumulator", None)
    return make() if make is not None else None


def mirror(pre: Preprocessing, tensor: np.ndarray) -> np.ndarray:
    """``tensor`` (``(..., H, W)`` from ``pre``) as the world mirrored left-right would give it (y -> -y; doppler,
    heights and intensities unchanged): each of ``pre.mirror_segments`` reversed. Equal to preprocessing the mirrored
    input except for points exactly on a cell border. Training mirrors whole batches this way (``train.flip_p``)."""
    out = np.array(tensor, dtype=np.float32, copy=True)
    for a, b in pre.mirror_segments:
        out[..., a:b] = out[..., a:b][..., ::-1]
    return out


def batch(pre: Preprocessing, items: Sequence[np.ndarray]) -> np.ndarray:
    """Preprocess several inputs into one ``(N, C, H, W)`` float32 array."""
    out = np.empty((len(items), *pre.input_shape), dtype=np.float32)
    for i, item in enumerate(items):
        out[i] = pre(item)
    return out


def turned_views(pre: Preprocessing, cloud: np.ndarray, views: int) -> np.ndarray:
    """A LiDAR scan seen at ``views`` headings: ``(views, C, H, W)``; view 0 is ``pre(cloud)``, view k the cloud as the
    sensor would see it turned left by ``k * 360 / views`` degrees (points rotated about z; other fields unchanged).

    A 360-degree LiDAR sees a place whatever the heading, but the encoders' inputs are laid out around the vehicle's
    forward direction (the front view looks like the camera's): a place driven through in another direction gives
    another tensor. Searching LiDAR entries with every view (``FusionPipeline``, ``cmr-fusion eval --lidar-views``)
    finds such places; the memory keeps view 0 only.
    """
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or not 1 <= views <= MAX_LIDAR_VIEWS:
        raise ConfigError("lidar_views", views, f"an integer in 1..{MAX_LIDAR_VIEWS}")
    if pre.modality is not Modality.LIDAR:
        raise ConfigError("lidar_views", views, f"a LiDAR preprocessing (got {pre.modality.value})")
    out = np.empty((int(views), *pre.input_shape), dtype=np.float32)
    from_points = pre._from_points  # both LiDAR preprocessings
    # the fields are read and checked once; only x, y are turned (the same arithmetic as turning the cloud)
    pts = _lidar_points(cloud)
    out[0] = from_points(pts)
    xy, turned = np.ascontiguousarray(pts[:2].T), pts.copy()
    for k in range(1, int(views)):
        moved = move_points(xy, (0.0, 0.0, 0.0), (0.0, 0.0, 2.0 * math.pi * k / views))
        turned[0], turned[1] = moved[:, 0], moved[:, 1]
        out[k] = from_points(turned)
    return out
