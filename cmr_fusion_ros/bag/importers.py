"""Convert real datasets into rosbag2 bags that follow the simulator's conventions (``cmr_fusion_ros/sim/README.md``).

DGP scenes (TRI's format: a scene JSON indexing samples and datums, a calibration JSON per sample, per-datum world
poses, JPEG/PNG cameras, npz LiDAR):

- every datum keeps its timestamp (minus a whole number of days when the dataset's clock does not fit ROS time's
  int32 seconds; the offset is recorded in the bag's ``custom_data`` and in ``import.json``);
- LiDAR ``LIDAR`` → ``/lidar/points`` (x, y, z, intensity float32, frame ``lidar``), other point clouds →
  ``/<name>/points``;
- the main camera (``--main-camera``, default the first camera of the calibration) → ``/camera/image/compressed``
  (the file's bytes, not re-encoded) or ``/camera/image`` (``raw_images``) + ``/camera/camera_info``; the other cameras
  → ``/<name>/image/compressed`` + ``/<name>/camera_info``; frame ids are the lower-case datum names;
- ``/odom`` (``odom`` → ``base_link``) and ``/tf`` at each distinct datum timestamp: the vehicle pose is the datum's
  world pose composed with the inverse of that sensor's extrinsic (the LiDAR's when it has a datum at that time);
  between two such timestamps, poses interpolated every ``odom_step_s`` (default 0.05 s: linear in position,
  spherical in orientation), so the readers' gap rule (``BagTopics.max_gap_ns``, ``--max-pose-gap``: any value of
  at least ``odom_step_s``) drops no sample between two datums;
- ``/tf_static``: ``base_link`` → each sensor, from the calibration extrinsics.

PJLab SensorsCalibration single frames (PCD LiDAR, CSV radar, an image, intrinsic/extrinsic JSON files; any subset
of the three sensors): one message per sensor at one stamp, ``base_link`` = the LiDAR frame (or, for a frame placed
only by a radar-to-camera extrinsic, the camera frame), an identity ``/odom`` at that stamp, ``/tf_static`` from the
extrinsics. Empty Delphi track slots are dropped (counted in ``ImportResult.dropped``); files whose own capture times
(the PCD ``timestamp`` field, the CSV ``time_ns`` column) lie more than ``max_capture_gap_s`` apart are imported with
a warning.

Real extrinsics are rarely exactly orthonormal: a rotation block off by more than ``ORTHONORMAL_WARN`` is replaced by
the nearest rotation (SVD) with a warning in ``ImportResult.warnings``; only a block off by more than
``ORTHONORMAL_REFUSE``, with a negative determinant, non-finite values or a last row other than (0, 0, 0, 1) is
refused. Unknown or broken input raises :class:`BagError` naming the file and what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.bag.writer import (
    BagWriter,
    camera_info_msg,
    cloud_msg,
    compressed_bytes_msg,
    image_msg,
    odometry_msg,
    tf_message,
    transform_msg,
)
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.image import decode_compressed
from cmr_fusion_ros.core.sensor_files import read_dgp_npz, read_pcd, read_radar_csv

__all__ = ["DgpImport", "ImportResult", "import_dgp", "import_pjlab", "find_dgp_scenes", "parse_dgp_time",
           "dgp_time_offset_ns", "nearest_rotation", "ORTHONORMAL_WARN", "ORTHONORMAL_REFUSE"]

ORTHONORMAL_WARN = 1e-5  # max |R R^T - I| kept as it is (float32-rounded calibration files reach ~1e-6)
ORTHONORMAL_REFUSE = 0.05  # beyond this a "rotation" is not a rotation with rounding errors: refused

_INT32_MAX_NS = (2**31 - 1) * 10**9
_TARGET_DAY_S = 1_749_945_600  # 2025-06-15T00:00:00Z: shifted clocks land on this day, time of day kept
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class ImportResult:
    path: Path
    counts: dict[str, int]
    time_offset_ns: int  # bag stamp = source time - time_offset_ns
    source: Path
    warnings: tuple[str, ...] = ()  # what was repaired or looks wrong but was imported
    dropped: dict[str, int] = field(default_factory=dict)  # what was left out, by reason


# ------------------------------------------------------------------------------------------------ small math
def _qmat(q: tuple[float, float, float, float]) -> np.ndarray:
    x, y, z, w = q
    n = np.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"invalid quaternion {q}")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _mat_q(m: np.ndarray) -> tuple[float, float, float, float]:
    from cmr_fusion_ros.sim.geometry import quat_from_matrix

    return quat_from_matrix(m)


def nearest_rotation(m: np.ndarray, where: str, warnings: list[str] | None = None) -> np.ndarray:
    """``m`` (3x3 or 4x4) with its rotation block replaced by the nearest rotation (SVD) when it is off orthonormal
    by more than :data:`ORTHONORMAL_WARN` (a warning appended to ``warnings``); :class:`BagError` when it is clearly
    not a rotation (off by more than :data:`ORTHONORMAL_REFUSE`, a reflection, non-finite, or a 4x4 whose last row
    is not 0 0 0 1)."""
    m = np.array(m, dtype=np.float64)
    R = m[:3, :3]
    if not np.isfinite(m).all():
        raise BagError(where, "the extrinsic holds non-finite values")
    if m.shape == (4, 4) and not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
        raise BagError(where, f"the 4x4 extrinsic's last row is {m[3].tolist()}, not [0, 0, 0, 1]")
    dev = float(np.abs(R @ R.T - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if dev > ORTHONORMAL_REFUSE or det <= 0:
        raise BagError(where, f"the extrinsic's rotation block is not a rotation: max |R R^T - I| = {dev:.3g} "
                              f"(refused above {ORTHONORMAL_REFUSE:g}), determinant {det:.3g}")
    if dev > ORTHONORMAL_WARN:
        u, _, vt = np.linalg.svd(R)
        fixed = u @ vt
        if warnings is not None:
            warnings.append(f"{where}: rotation block off orthonormal by {dev:.2e} (max |R R^T - I|); replaced by the "
                            f"nearest rotation (entries moved by up to {np.abs(fixed - R).max():.2e})")
        m[:3, :3] = fixed
    return m


def _T(R: np.ndarray, t) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = np.asarray(t, dtype=float)
    return out


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise BagError(str(path), f"cannot read: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise BagError(str(path), f"not valid JSON: {err}") from err


# ------------------------------------------------------------------------------------------------ DGP
def parse_dgp_time(value: str, where: str) -> int:
    """DGP ISO-8601 timestamp ('2463-05-15T00:38:58.203752Z') -> int nanoseconds since the Unix epoch."""
    try:
        s = str(value)
        if s.endswith("Z"):
            s = s[:-1]
        if "." in s:
            main, frac = s.split(".", 1)
        else:
            main, frac = s, "0"
        if not frac.isdigit() or len(frac) > 9:
            raise ValueError(f"bad fraction {frac!r}")
        dt = datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except (ValueError, TypeError) as err:
        raise BagError(where, f"bad timestamp {value!r}: {err}") from err
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    delta = dt - epoch
    secs = delta.days * 86400 + delta.seconds
    return secs * 10**9 + int(frac.ljust(9, "0"))


def dgp_time_offset_ns(stamps: list[int]) -> int:
    """0 if every stamp fits ROS time (int32 seconds); else whole days moving the first stamp to 2025-06-15."""
    if not stamps or (min(stamps) >= 0 and max(stamps) <= _INT32_MAX_NS):
        return 0
    days = min(stamps) // _DAY_NS - _TARGET_DAY_S // 86400
    return int(days) * _DAY_NS


def _pose(d: dict, where: str) -> np.ndarray:
    try:
        r, t = d["rotation"], d["translation"]
        q = (float(r.get("qx", 0.0)), float(r.get("qy", 0.0)), float(r.get("qz", 0.0)), float(r.get("qw", 1.0)))
        return _T(_qmat(q), (float(t.get("x", 0.0)), float(t.get("y", 0.0)), float(t.get("z", 0.0))))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise BagError(where, f"bad pose {d!r}: {err}") from err


@dataclass(frozen=True)
class _Datum:
    key: str
    name: str
    kind: str  # image | point_cloud
    stamp_ns: int  # source time
    filename: Path
    pose: np.ndarray  # 4x4 sensor -> world
    info: dict


@dataclass(frozen=True)
class DgpImport:
    """A parsed DGP scene: datums sorted by time, calibration (name -> extrinsic 4x4 sensor -> vehicle, intrinsics)."""

    scene_json: Path
    name: str
    datums: list[_Datum]
    extrinsics: dict[str, np.ndarray]
    intrinsics: dict[str, dict]

    @property
    def cameras(self) -> list[str]:
        return sorted({d.name for d in self.datums if d.kind == "image"})


def find_dgp_scenes(path: str | Path) -> list[Path]:
    """Scene JSON files under `path`: the file itself, a scene directory's scene_*.json, or a dataset's splits."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise BagError(str(p), "no such file or directory")
    dataset = sorted(p.glob("scene_dataset*.json"))
    if dataset:
        data = _load_json(dataset[0])
        names: list[str] = []
        for split in (data.get("scene_splits") or {}).values():
            for f in split.get("filenames", []):
                if f not in names:
                    names.append(f)
        if not names:
            raise BagError(str(dataset[0]), "dataset JSON lists no scene files in scene_splits")
        return [p / n for n in names]
    scenes = sorted(p.glob("scene_*.json"))
    if not scenes:
        raise BagError(str(p), "no DGP scene JSON (scene_*.json) or dataset JSON (scene_dataset*.json) here")
    return scenes


def load_dgp_scene(scene_json: str | Path) -> DgpImport:
    sj = Path(scene_json)
    scene = _load_json(sj)
    if not isinstance(scene, dict) or "data" not in scene or "samples" not in scene:
        raise BagError(str(sj), "not a DGP scene JSON: needs 'data' and 'samples'")
    root = sj.parent
    calib_keys = {s.get("calibration_key") for s in scene["samples"] if s.get("calibration_key")}
    if not calib_keys:
        raise BagError(str(sj), "samples carry no calibration_key")
    if len(calib_keys) > 1:
        raise BagError(str(sj), f"samples use {len(calib_keys)} different calibrations; one per scene is supported")
    calib_path = root / "calibration" / f"{calib_keys.pop()}.json"
    calib = _load_json(calib_path)
    try:
        names = list(calib["names"])
        extrinsics = {n: _pose(e, f"{calib_path} extrinsics[{n}]") for n, e in zip(names, calib["extrinsics"])}
        intrinsics = dict(zip(names, calib["intrinsics"]))
    except (KeyError, TypeError) as err:
        raise BagError(str(calib_path), f"calibration needs names, extrinsics, intrinsics: {err}") from err
    datums: list[_Datum] = []
    for i, entry in enumerate(scene["data"]):
        where = f"{sj} data[{i}]"
        try:
            name = entry["id"]["name"]
            stamp = parse_dgp_time(entry["id"]["timestamp"], where)
            (kind, body), = entry["datum"].items()
        except (KeyError, TypeError, ValueError) as err:
            raise BagError(where, f"datum needs id.name, id.timestamp and one datum kind: {err}") from err
        if kind not in ("image", "point_cloud"):
            raise BagError(where, f"unsupported datum kind {kind!r} (supported: image, point_cloud)")
        if name not in extrinsics:
            raise BagError(where, f"sensor {name!r} is not in the calibration {calib_path.name}")
        if "filename" not in body or "pose" not in body:
            raise BagError(where, "datum needs 'filename' and 'pose'")
        datums.append(_Datum(entry.get("key", str(i)), name, kind, stamp, root / body["filename"],
                             _pose(body["pose"], where), body))
    datums.sort(key=lambda d: (d.stamp_ns, d.kind != "point_cloud", d.name))
    return DgpImport(sj, scene.get("name") or sj.parent.name, datums, extrinsics, intrinsics)


def _frame(name: str) -> str:
    return name.lower()


def _between(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    """The pose a fraction ``f`` of the way from 4x4 pose ``a`` to ``b`` (linear position, slerp orientation)."""
    qa, qb = np.asarray(_mat_q(a[:3, :3])), np.asarray(_mat_q(b[:3, :3]))
    if float(qa @ qb) < 0:
        qb = -qb
    theta = float(np.arccos(np.clip(qa @ qb, -1.0, 1.0)))
    q = qa + f * (qb - qa) if theta < 1e-6 else (np.sin((1 - f) * theta) * qa + np.sin(f * theta) * qb) / np.sin(theta)
    return _T(_qmat(tuple(q / np.linalg.norm(q))), a[:3, 3] * (1 - f) + b[:3, 3] * f)


def import_dgp(scene_json: str | Path, out: str | Path, *, storage: str = "mcap", raw_images: bool = False,
               main_camera: str | None = None, progress: Callable[[int], None] | None = None,
               odom_step_s: float = 0.05) -> ImportResult:
    """Write one DGP scene as a bag at `out` (``odom_step_s``: interpolated /odom between the datum stamps)."""
    if not (isinstance(odom_step_s, (int, float)) and 0.001 <= odom_step_s <= 10):
        raise BagError(str(scene_json), f"odom step {odom_step_s!r} s: allowed 0.001..10 s")
    scene = load_dgp_scene(scene_json)
    if not scene.datums:
        raise BagError(str(scene.scene_json), "the scene has no datums")
    cams = [n for n in scene.extrinsics if n in scene.cameras]
    if main_camera is not None and main_camera not in cams:
        raise BagError(str(scene.scene_json), f"--main-camera {main_camera!r} has no images; cameras: {', '.join(cams)}")
    main = main_camera or (cams[0] if cams else None)
    offset = dgp_time_offset_ns([d.stamp_ns for d in scene.datums])

    # vehicle pose per distinct timestamp (the LiDAR's datum first: datums are sorted point clouds first)
    base_at: dict[int, np.ndarray] = {}
    for d in scene.datums:
        if d.stamp_ns not in base_at:
            base_at[d.stamp_ns] = d.pose @ np.linalg.inv(scene.extrinsics[d.name])
    out = Path(out)
    custom = {"cmr_fusion.source": str(scene.scene_json), "cmr_fusion.time_offset_ns": str(offset)}
    with BagWriter(out, storage=storage, custom_data=custom) as bag:
        ts = bag.typestore
        first = scene.datums[0].stamp_ns - offset
        statics = []
        for name, ext in scene.extrinsics.items():
            if name not in {d.name for d in scene.datums}:
                continue
            statics.append(transform_msg(ts, first, "base_link", _frame(name), ext[:3, 3], _mat_q(ext[:3, :3])))
        bag.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", latched=True)
        bag.write("/tf_static", first, tf_message(ts, statics))
        written_pose: set[int] = set()
        step_ns = int(round(odom_step_s * 1e9))
        prev: int | None = None
        for d in scene.datums:
            stamp = d.stamp_ns - offset
            if d.stamp_ns not in written_pose:
                written_pose.add(d.stamp_ns)
                poses = [(d.stamp_ns, base_at[d.stamp_ns])]
                if prev is not None:  # dense odometry between two datum stamps
                    a, b = base_at[prev], base_at[d.stamp_ns]
                    span = d.stamp_ns - prev
                    poses = [(t, _between(a, b, (t - prev) / span)) for t in range(prev + step_ns, d.stamp_ns, step_ns)
                             if d.stamp_ns - t >= step_ns // 2] + poses
                prev = d.stamp_ns
                for t_src, T in poses:
                    t = t_src - offset
                    q = _mat_q(T[:3, :3])
                    bag.write("/odom", t, odometry_msg(ts, t, "odom", "base_link", T[:3, 3], q))
                    bag.write("/tf", t, tf_message(ts, [transform_msg(ts, t, "odom", "base_link", T[:3, 3], q)]))
            frame = _frame(d.name)
            if not d.filename.is_file():
                raise BagError(str(d.filename), f"file of datum {d.name} at {d.info.get('filename')} is missing")
            if d.kind == "point_cloud":
                pts = read_dgp_npz(d.filename)
                topic = "/lidar/points" if d.name.upper() == "LIDAR" else f"/{frame}/points"
                bag.write(topic, stamp, cloud_msg(ts, stamp, frame, pts))
            else:
                prefix = "/camera" if d.name == main else f"/{frame}"
                data = d.filename.read_bytes()
                ext = d.filename.suffix.lower()
                kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}.get(ext)
                if kind is None:
                    raise BagError(str(d.filename), f"unsupported image file type {ext!r} (jpeg or png)")
                fmt = f"rgb8; {kind} compressed bgr8"
                if raw_images:
                    try:
                        rgb = decode_compressed((fmt, data), "rgb8")
                    except Exception as err:  # opencv or conversion failure: name the file
                        raise BagError(str(d.filename), f"cannot decode image: {err}") from err
                    bag.write(f"{prefix}/image", stamp, image_msg(ts, stamp, frame, rgb, "rgb8"))
                else:
                    bag.write(f"{prefix}/image/compressed", stamp, compressed_bytes_msg(ts, stamp, frame, fmt, data))
                intr = scene.intrinsics.get(d.name, {})
                try:
                    K = np.array([[float(intr["fx"]), float(intr.get("skew", 0.0)), float(intr["cx"])],
                                  [0.0, float(intr["fy"]), float(intr["cy"])], [0.0, 0.0, 1.0]])
                except (KeyError, TypeError, ValueError) as err:
                    raise BagError(str(scene.scene_json), f"camera {d.name}: intrinsics need fx, fy, cx, cy: {err}") from err
                w, h = int(d.info.get("width", 0)), int(d.info.get("height", 0))
                bag.write(f"{prefix}/camera_info", stamp, camera_info_msg(ts, stamp, frame, w, h, K))
            if progress is not None:
                progress(1)
        counts = dict(bag.counts)
    record = {
        "source": str(scene.scene_json),
        "format": "dgp",
        "scene": scene.name,
        "time_offset_ns": offset,
        "main_camera": main,
        "odom_step_s": odom_step_s,
        "note": "bag stamp = source timestamp - time_offset_ns",
    }
    (out / "import.json").write_text(json.dumps(record, indent=1) + "\n")
    return ImportResult(out, counts, offset, scene.scene_json)


# ------------------------------------------------------------------------------------------------ PJLab
def read_pjlab_matrix(path: str | Path, warnings: list[str] | None = None) -> np.ndarray:
    """The matrix of a PJLab calibration JSON (``{name: {param: {sensor_calib | cam_K: {data: rows}}}}``); a 4x4
    extrinsic's rotation block goes through :func:`nearest_rotation` (repairs appended to ``warnings``)."""
    p = Path(path)
    data = _load_json(p)
    try:
        (body,) = data.values()
        param = body["param"]
        block = param.get("sensor_calib") or param.get("cam_K")
        m = np.asarray(block["data"], dtype=np.float64)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BagError(str(p), f"not a PJLab calibration JSON (param.sensor_calib.data or param.cam_K.data): {err}") from err
    if m.shape not in ((4, 4), (3, 3)):
        raise BagError(str(p), f"expected a 4x4 extrinsic or 3x3 intrinsic matrix, got shape {m.shape}")
    if m.shape == (4, 4):
        m = nearest_rotation(m, str(p), warnings)
    return m


def _pjlab_intrinsic(path: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    K = read_pjlab_matrix(path)
    if K.shape != (3, 3):
        raise BagError(str(path), "intrinsic JSON must hold a 3x3 cam_K")
    (body,) = _load_json(path).values()
    param = body["param"]
    dist = np.asarray(param.get("cam_dist", {}).get("data", [[0, 0, 0, 0]]), dtype=np.float64).reshape(-1)
    return K, dist, int(param.get("img_dist_w", 0)), int(param.get("img_dist_h", 0))


def import_pjlab(out: str | Path, *, lidar: str | Path | None = None, radar: str | Path | None = None,
                 image: str | Path | None = None, camera_intrinsic: str | Path | None = None,
                 lidar_to_camera: str | Path | None = None, radar_to_lidar: str | Path | None = None,
                 radar_to_camera: str | Path | None = None, stamp_ns: int = 1_750_000_000 * 10**9,
                 storage: str = "mcap", raw_images: bool = False, max_capture_gap_s: float = 1.0) -> ImportResult:
    """One PJLab frame as a bag: /lidar/points, /radar/points, /camera/image[/compressed] + camera_info (any subset,
    at least one), /odom, tf."""
    if lidar is None and radar is None and image is None:
        raise BagError(str(out), "a PJLab frame needs at least one of --lidar, --radar, --image")
    warnings: list[str] = []
    dropped: dict[str, int] = {}
    captures: dict[str, tuple[float, float]] = {}  # file -> (first, last) capture time in seconds, from the file
    pts = None
    if lidar is not None:
        lidar = Path(lidar)
        pts = read_pcd(lidar)
        for f in ("x", "y", "z"):
            if pts.dtype.names is None or f not in pts.dtype.names:
                raise BagError(str(lidar), f"PCD has no {f!r} field (fields: {pts.dtype.names})")
        if "timestamp" in pts.dtype.names and len(pts):
            t = pts["timestamp"].astype(np.float64)
            captures[str(lidar)] = (float(np.nanmin(t)), float(np.nanmax(t)))
    # base_link: the LiDAR frame, unless only a radar-to-camera extrinsic places the sensors (then the camera frame)
    camera_base = lidar is None and lidar_to_camera is None and radar_to_lidar is None
    statics: list[tuple[str, np.ndarray]] = [("lidar", np.eye(4))] if lidar is not None else []
    T_cam_lidar = None
    if lidar_to_camera is not None:
        T_cam_lidar = read_pjlab_matrix(lidar_to_camera, warnings)
        if T_cam_lidar.shape != (4, 4):
            raise BagError(str(lidar_to_camera), "extrinsic JSON must hold a 4x4 matrix")
        statics.append(("camera", np.linalg.inv(T_cam_lidar)))  # base_link (= lidar) <- camera
    elif camera_base and image is not None:
        statics.append(("camera", np.eye(4)))
    if radar is not None:
        if radar_to_lidar is None and radar_to_camera is None:
            raise BagError(str(radar), "a radar needs --radar-to-lidar or --radar-to-camera to place it")
        if radar_to_lidar is not None:
            T = read_pjlab_matrix(radar_to_lidar, warnings)
            statics.append(("radar", T))
        elif camera_base:
            statics.append(("radar", read_pjlab_matrix(radar_to_camera, warnings)))  # base_link (= camera) <- radar
        else:
            if T_cam_lidar is None:
                raise BagError(str(radar_to_camera), "radar-to-camera needs --lidar-to-camera to place the radar")
            statics.append(("radar", np.linalg.inv(T_cam_lidar) @ read_pjlab_matrix(radar_to_camera, warnings)))
    if image is not None and (camera_intrinsic is None or (lidar_to_camera is None and not camera_base)):
        raise BagError(str(image), "an image needs --camera-intrinsic and --lidar-to-camera (or, without a LiDAR, "
                                   "the radar placed by --radar-to-camera)")
    det = None
    if radar is not None:
        report: dict[str, int] = {}
        det = read_radar_csv(radar, report)
        if "doppler" not in (det.dtype.names or ()):
            raise BagError(str(radar), "radar CSV has neither position_x/position_y (ARS408) nor "
                                       "track_range_m/track_angle_rad (Delphi ESR) columns")
        if report.get("placeholder_rows"):
            dropped["radar placeholder rows (empty Delphi track slots: range 0, range rate 81.91)"] = \
                report["placeholder_rows"]
        if "time_ns" in det.dtype.names and len(det):
            t = det["time_ns"].astype(np.float64) / 1e9
            captures[str(radar)] = (float(t.min()), float(t.max()))
    if len(captures) > 1:
        first = min(a for a, _ in captures.values())
        last = max(b for _, b in captures.values())
        if last - first > max_capture_gap_s:
            when = "; ".join(f"{Path(f).name} at {datetime.fromtimestamp(a, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
                             for f, (a, _) in captures.items())
            warnings.append(f"the files were captured {_span(last - first)} apart ({when}): they do not show one "
                            f"moment; imported at one stamp anyway")
    out = Path(out)
    with BagWriter(out, storage=storage) as bag:
        ts = bag.typestore
        bag.add_topic("/tf_static", "tf2_msgs/msg/TFMessage", latched=True)
        bag.write("/tf_static", stamp_ns, tf_message(ts, [
            transform_msg(ts, stamp_ns, "base_link", name, T[:3, 3], _mat_q(T[:3, :3])) for name, T in statics]))
        bag.write("/odom", stamp_ns, odometry_msg(ts, stamp_ns, "odom", "base_link", (0, 0, 0), (0, 0, 0, 1)))
        bag.write("/tf", stamp_ns, tf_message(ts, [transform_msg(ts, stamp_ns, "odom", "base_link", (0, 0, 0),
                                                                 (0, 0, 0, 1))]))
        if pts is not None:
            bag.write("/lidar/points", stamp_ns, cloud_msg(ts, stamp_ns, "lidar", pts))
        if det is not None:
            bag.write("/radar/points", stamp_ns, cloud_msg(ts, stamp_ns, "radar", det))
        if image is not None:
            img_path = Path(image)
            K, dist, w, h = _pjlab_intrinsic(Path(camera_intrinsic))
            try:
                data = img_path.read_bytes()
            except OSError as err:
                raise BagError(str(img_path), f"cannot read: {err.strerror or err}") from err
            kind = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}.get(img_path.suffix.lower())
            if kind is None:
                raise BagError(str(img_path), f"unsupported image file type {img_path.suffix!r} (jpeg or png)")
            fmt = f"rgb8; {kind} compressed bgr8"
            try:
                rgb = decode_compressed((fmt, data), "rgb8")
            except Exception as err:  # opencv or conversion failure: name the file
                raise BagError(str(img_path), f"cannot decode image: {err}") from err
            h, w = rgb.shape[:2] if not (w and h) else (h, w)
            if raw_images:
                bag.write("/camera/image", stamp_ns, image_msg(ts, stamp_ns, "camera", rgb, "rgb8"))
            else:
                bag.write("/camera/image/compressed", stamp_ns, compressed_bytes_msg(ts, stamp_ns, "camera", fmt, data))
            D = list(dist) + [0.0] * max(0, 5 - len(dist))
            bag.write("/camera/camera_info", stamp_ns, camera_info_msg(ts, stamp_ns, "camera", w, h, K, D))
        counts = dict(bag.counts)
    record = {"format": "pjlab", "lidar": str(lidar) if lidar else None, "radar": str(radar) if radar else None,
              "image": str(image) if image else None, "stamp_ns": stamp_ns, "time_offset_ns": 0,
              "base_link": "camera" if camera_base else "lidar", "warnings": warnings, "dropped": dropped}
    (out / "import.json").write_text(json.dumps(record, indent=1) + "\n")
    return ImportResult(out, counts, 0, Path(lidar or radar or image), tuple(warnings), dropped)


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.1f} s"
