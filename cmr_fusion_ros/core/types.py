"""Value types shared by every layer. Frozen dataclasses and enums; times are integer nanoseconds."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["MAX_LIDAR_VIEWS", "Modality", "Pose"]

MAX_LIDAR_VIEWS = 64  # headings a LiDAR scan may be searched at (encoders.lidar_views, preprocess.turned_views)


class Modality(str, enum.Enum):
    """A sensor modality. The value is the string used in config files and in messages."""

    CAMERA = "camera"
    LIDAR = "lidar"
    RADAR = "radar"

    @classmethod
    def parse(cls, value: str) -> "Modality":
        from cmr_fusion_ros.core.errors import ConfigError

        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ConfigError("modality", value, " | ".join(m.value for m in cls)) from None


@dataclass(frozen=True, slots=True)
class Pose:
    """Position (metres) and orientation (unit quaternion x, y, z, w) in some fixed frame."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    qx: float = 0.0
    qy: float = 0.0
    qz: float = 0.0
    qw: float = 1.0

    def distance_to(self, other: "Pose") -> float:
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))

    @property
    def yaw(self) -> float:
        """Heading about z (radians, counter-clockwise from +x) of the orientation."""
        return math.atan2(2.0 * (self.qw * self.qz + self.qx * self.qy), 1.0 - 2.0 * (self.qy * self.qy + self.qz * self.qz))
