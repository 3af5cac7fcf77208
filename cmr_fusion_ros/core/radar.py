"""Radar returns carried as PointCloud2 with user-configurable field names (no ROS)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError, ConversionError
from cmr_fusion_ros.core.pointcloud import structured

__all__ = ["RadarFields", "RADAR_DTYPE", "radar_array"]

# The canonical radar layout used inside the project: position in the radar frame, radial velocity, RCS.
RADAR_DTYPE = np.dtype([("x", "f4"), ("y", "f4"), ("z", "f4"), ("doppler", "f4"), ("rcs", "f4")])


@dataclass(frozen=True, slots=True)
class RadarFields:
    """Names of the radar fields in the incoming PointCloud2 (drivers differ: ``v_r``, ``velocity``, ``power``...).

    ``z`` may be empty for 2-D radars (z = 0), ``rcs`` may be empty when the sensor reports none (rcs = 0).
    """

    x: str = "x"
    y: str = "y"
    z: str = "z"
    doppler: str = "doppler"
    rcs: str = "rcs"

    def __post_init__(self) -> None:
        for f in ("x", "y", "doppler"):
            if not getattr(self, f):
                raise ConfigError(f"radar_fields.{f}", getattr(self, f), "a non-empty field name")


def radar_array(cloud: np.ndarray, names: RadarFields = RadarFields()) -> np.ndarray:
    """Map a decoded radar cloud with any field names onto :data:`RADAR_DTYPE` (x, y, z, doppler, rcs float32)."""
    have = cloud.dtype.names or ()
    flat = cloud.reshape(-1)
    cols = {}
    for f in fields(RadarFields):
        src = getattr(names, f.name)
        if not src:
            cols[f.name] = np.zeros(flat.shape[0], np.float32)
            continue
        if src not in have:
            raise ConversionError("sensor_msgs/PointCloud2", f"fields[{src!r}]",
                                  f"radar field for '{f.name}' missing; the cloud has {list(have)} "
                                  f"(set radar_fields.{f.name})")
        cols[f.name] = flat[src].astype(np.float32)
    return structured(cols)
