"""Readers for the sensor file formats of public datasets, into the same structured arrays as PointCloud2.

* ``.pcd`` (PCL; ascii, binary, binary_compressed): header parsed here, data read by open3d's tensor IO, which
  keeps every field with its type; field order follows the header.
* DGP ``.npz`` LiDAR sweeps (key ``data``: N x 4 float64 X, Y, Z, INTENSITY in the sensor frame).
* radar ``.csv`` files: every column becomes a field (int32 for integer columns that fit, float64 otherwise); a file with
  ``position_x``/``position_y`` (Continental ARS408 objects) or ``track_range_m``/``track_angle_rad`` (Delphi ESR
  tracks) also gets ``x, y, z, doppler, rcs`` float32 fields in the radar frame, the layout the encoders expect.
  Delphi ESR placeholder rows (an empty track slot: range 0 and range rate 81.91 m/s, the field's largest code)
  are dropped; ``report`` tells how many.

Every problem raises :class:`BagError` naming the file and what was wrong.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.pointcloud import structured

__all__ = ["read_pcd", "read_dgp_npz", "read_radar_csv", "pcd_header"]

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("I", 1): "i1",
              ("I", 2): "i2", ("I", 4): "i4", ("U", 8): "u8", ("I", 8): "i8"}


def pcd_header(path: str | Path) -> dict[str, list[str]]:
    """The header lines of a PCD file as ``{KEY: [values...]}`` up to and including ``DATA``."""
    p = Path(path)
    header: dict[str, list[str]] = {}
    try:
        with p.open("rb") as fh:
            for _ in range(64):
                line = fh.readline()
                if not line:
                    break
                text = line.decode("ascii", errors="replace").strip()
                if not text or text.startswith("#"):
                    continue
                key, *values = text.split()
                header[key.upper()] = values
                if key.upper() == "DATA":
                    break
    except OSError as err:
        raise BagError(str(p), f"cannot read: {err}") from err
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT", "DATA"):
        if key not in header:
            raise BagError(str(p), f"not a PCD file: header has no {key} line")
    return header


def read_pcd(path: str | Path) -> np.ndarray:
    """Read a PCD file into a packed structured array ``(N,)`` with the header's field names and types."""
    p = Path(path)
    header = pcd_header(p)
    names, sizes, types = header["FIELDS"], header["SIZE"], header["TYPE"]
    counts = header.get("COUNT", ["1"] * len(names))
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise BagError(str(p), f"PCD header: FIELDS/SIZE/TYPE/COUNT lengths differ ({len(names)}, {len(sizes)}, {len(types)}, {len(counts)})")
    dtypes = []
    for name, size, typ, count in zip(names, sizes, types, counts):
        key = (typ.upper(), int(size))
        if key not in _PCD_TYPES:
            raise BagError(str(p), f"PCD field {name!r}: unsupported TYPE {typ} SIZE {size}")
        if int(count) != 1:
            raise BagError(str(p), f"PCD field {name!r}: COUNT {count} unsupported (only 1)")
        dtypes.append(np.dtype(_PCD_TYPES[key]))
    if header["DATA"][0] not in ("ascii", "binary", "binary_compressed"):
        raise BagError(str(p), f"PCD DATA {header['DATA'][0]!r} unsupported (ascii, binary, binary_compressed)")
    import open3d as o3d  # heavy: imported only when a PCD is read

    cloud = o3d.t.io.read_point_cloud(str(p))
    attrs = {k: cloud.point[k].numpy() for k in cloud.point}
    n = int(header.get("POINTS", [int(header["WIDTH"][0]) * int(header["HEIGHT"][0])])[0])
    if "positions" not in attrs or attrs["positions"].shape[0] != n:
        got = attrs.get("positions", np.empty((0, 3))).shape[0]
        raise BagError(str(p), f"PCD data holds {got} points, header says {n} (truncated or corrupt)")
    columns = []
    for name, dtype in zip(names, dtypes):
        if name in ("x", "y", "z"):
            col = attrs["positions"][:, "xyz".index(name)]
        elif name in attrs:
            col = attrs[name].reshape(-1)
        else:
            raise BagError(str(p), f"PCD field {name!r} was not read by open3d")
        columns.append((name, col.astype(dtype, copy=False)))
    return structured(columns)


def read_dgp_npz(path: str | Path) -> np.ndarray:
    """A DGP LiDAR sweep ``.npz`` (key ``data``: N x 4 X, Y, Z, INTENSITY) as float32 x, y, z, intensity."""
    p = Path(path)
    try:
        with np.load(p) as npz:
            if "data" not in npz:
                raise BagError(str(p), f"npz has no 'data' array (keys: {list(npz.keys())})")
            data = npz["data"]
    except (OSError, ValueError) as err:
        raise BagError(str(p), f"cannot read npz: {err}") from err
    if data.ndim != 2 or data.shape[1] < 3:
        raise BagError(str(p), f"'data' must be N x 4 (X, Y, Z, INTENSITY), got shape {data.shape}")
    inten = data[:, 3] if data.shape[1] > 3 else np.zeros(data.shape[0])
    return structured(
        {
            "x": data[:, 0].astype(np.float32),
            "y": data[:, 1].astype(np.float32),
            "z": data[:, 2].astype(np.float32),
            "intensity": inten.astype(np.float32),
        }
    )


# Column names that real files run together (a missing comma in the header), split back apart.
_HEADER_FIXES = {"prob_of_existobject_type": ["prob_of_exist", "object_type"]}


def _column(values: list[str]) -> np.ndarray:
    """int32 for integer columns that fit, else float64 (PointCloud2 has no 64-bit integer datatype, so e.g. a
    ``time_ns`` column of epoch nanoseconds becomes float64, exact to 256 ns at today's epoch)."""
    try:
        ints = np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array([float(v) for v in values], dtype=np.float64)
    info = np.iinfo(np.int32)
    if ints.size == 0 or (ints.min() >= info.min and ints.max() <= info.max):
        return ints.astype(np.int32)
    return ints.astype(np.float64)


DELPHI_EMPTY_RANGE_RATE = 81.91  # m/s: 8191 x 0.01, what a Delphi ESR sends for an empty track slot


def read_radar_csv(path: str | Path, report: dict[str, int] | None = None) -> np.ndarray:
    """Read a radar CSV (header row + one row per detection/object/track) into a structured array. ``report`` (a
    dict, when given) receives ``rows`` (data rows in the file) and ``placeholder_rows`` (empty Delphi track slots
    dropped: range 0 and range rate 81.91)."""
    p = Path(path)
    try:
        with p.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as err:
        raise BagError(str(p), f"cannot read: {err}") from err
    if len(rows) < 2:
        raise BagError(str(p), "radar CSV needs a header row and at least one data row")
    head = [h.strip() for h in rows[0]]
    body = rows[1:]
    if body and len(body[0]) > len(head):  # known header typos: two column names run together
        head = [part for h in head for part in _HEADER_FIXES.get(h, [h])]
    for i, row in enumerate(body, start=2):
        if len(row) != len(head):
            raise BagError(str(p), f"line {i}: {len(row)} values, header has {len(head)} columns")
    cols: dict[str, np.ndarray] = {}
    for j, name in enumerate(head):
        try:
            cols[name] = _column([row[j] for row in body])
        except ValueError as err:
            raise BagError(str(p), f"column {name!r}: non-numeric value ({err})") from err
    zeros = np.zeros(len(body), dtype=np.float32)
    if "position_x" in cols and "position_y" in cols:  # Continental ARS408 object list
        vx = cols.get("velocity_x", zeros).astype(np.float64)
        vy = cols.get("velocity_y", zeros).astype(np.float64)
        px, py = cols["position_x"].astype(np.float64), cols["position_y"].astype(np.float64)
        rng = np.hypot(px, py)
        radial = np.where(rng > 0, (px * vx + py * vy) / np.maximum(rng, 1e-9), 0.0)
        derived = {"x": px, "y": py, "z": zeros, "doppler": radial, "rcs": cols.get("rcs", zeros)}
    elif "track_range_m" in cols and "track_angle_rad" in cols:  # Delphi ESR tracks
        rate = cols.get("track_range_rate_m_per_s")
        if rate is not None:  # empty track slots: not detections at the sensor origin
            keep = ~((cols["track_range_m"] == 0) & np.isclose(rate, DELPHI_EMPTY_RANGE_RATE, atol=0.005))
            cols = {k: v[keep] for k, v in cols.items()}
            zeros = zeros[keep]
        r, a = cols["track_range_m"].astype(np.float64), cols["track_angle_rad"].astype(np.float64)
        derived = {"x": r * np.cos(a), "y": r * np.sin(a), "z": zeros,
                   "doppler": cols.get("track_range_rate_m_per_s", zeros), "rcs": zeros}
    else:
        derived = {}
    if report is not None:
        report["rows"] = len(body)
        report["placeholder_rows"] = len(body) - len(zeros)
    out = [(k, np.asarray(v).astype(np.float32)) for k, v in derived.items()]
    out += [(k, v) for k, v in cols.items() if k not in derived]
    return structured(out)
