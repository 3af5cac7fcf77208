"""Typed, self-validating configuration of the simulator (rates, resolutions, noise, town size, route).

Loaded from YAML (``config/sim_default.yaml``); every key is optional and overrides the default below. An unknown key
or a bad value raises :class:`~cmr_fusion_ros.core.errors.ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.validate import non_negative, positive, require

__all__ = [
    "CameraConfig",
    "LidarConfig",
    "OdomConfig",
    "RadarConfig",
    "RigDrawConfig",
    "RouteConfig",
    "SimConfig",
    "TownConfig",
    "load_sim_config",
]


@dataclass(frozen=True)
class CameraConfig:
    rate_hz: float = 10.0
    width: int = 400
    height: int = 300
    hfov_deg: float = 90.0
    noise_std: float = 3.0  # pixel noise, 0-255 scale
    shadows: bool = True
    lighting: str = "random"  # random: a lighting preset drawn per session; flat: white ambient only (albedo)
    jpeg_quality: int = 90
    translation: tuple[float, float, float] = (1.5, 0.0, 1.6)  # base_link -> camera_optical_frame

    def __post_init__(self) -> None:
        positive("camera", self, "rate_hz", "width", "height", "hfov_deg")
        non_negative("camera", self, "noise_std")
        require(self.hfov_deg < 170, "camera.hfov_deg", self.hfov_deg, "0 < hfov_deg < 170")
        require(self.lighting in ("random", "flat"), "camera.lighting", self.lighting, "random | flat")
        require(1 <= int(self.jpeg_quality) <= 100, "camera.jpeg_quality", self.jpeg_quality, "an integer 1..100")
        require(isinstance(self.width, int), "camera.width", self.width, "an integer > 0")
        require(isinstance(self.height, int), "camera.height", self.height, "an integer > 0")

    @property
    def fx(self) -> float:
        import math

        return (self.width / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy (square pixels, principal point at the image centre)."""
        return (self.fx, self.fx, (self.width - 1) / 2.0, (self.height - 1) / 2.0)


@dataclass(frozen=True)
class LidarConfig:
    rate_hz: float = 10.0
    beams: int = 32
    columns: int = 1024
    vfov_min_deg: float = -25.0
    vfov_max_deg: float = 15.0
    min_range: float = 1.0
    max_range: float = 100.0
    range_noise_std: float = 0.02
    dropout: float = 0.02
    translation: tuple[float, float, float] = (1.0, 0.0, 1.9)

    def __post_init__(self) -> None:
        positive("lidar", self, "rate_hz", "beams", "columns", "max_range", "min_range")
        non_negative("lidar", self, "range_noise_std")
        require(0 <= self.dropout < 1, "lidar.dropout", self.dropout, "0 <= dropout < 1")
        require(-90 < self.vfov_min_deg < self.vfov_max_deg < 90, "lidar.vfov_max_deg", self.vfov_max_deg, "-90 < vfov_min_deg < vfov_max_deg < 90")
        require(self.max_range > self.min_range, "lidar.max_range", self.max_range, "max_range > min_range")


@dataclass(frozen=True)
class RadarConfig:
    rate_hz: float = 15.0
    hfov_deg: float = 100.0
    vfov_deg: float = 10.0
    ray_step_deg: float = 0.5  # ray-casting sampling step (finer than the resolution)
    azimuth_resolution_deg: float = 2.0
    range_resolution: float = 0.5
    max_range: float = 120.0
    range_noise_std: float = 0.10
    azimuth_noise_std_deg: float = 0.3
    doppler_noise_std: float = 0.05
    detection_threshold_db: float = -25.0  # SNR-like threshold on rcs_dBsm - 40 log10(range)
    false_alarms_per_scan: float = 3.0
    max_points: int = 128
    translation: tuple[float, float, float] = (3.6, 0.0, 0.6)

    def __post_init__(self) -> None:
        positive("radar", self, "rate_hz", "hfov_deg", "vfov_deg", "ray_step_deg", "azimuth_resolution_deg",
                  "range_resolution", "max_range", "max_points")
        non_negative("radar", self, "range_noise_std", "azimuth_noise_std_deg", "doppler_noise_std",
                      "false_alarms_per_scan")
        require(self.hfov_deg < 180, "radar.hfov_deg", self.hfov_deg, "0 < hfov_deg < 180")


@dataclass(frozen=True)
class OdomConfig:
    rate_hz: float = 50.0  # /odom and the odom -> base_link transform on /tf

    def __post_init__(self) -> None:
        positive("odom", self, "rate_hz")


@dataclass(frozen=True)
class TownConfig:
    blocks_x: int = 5
    blocks_y: int = 5
    block_min: float = 45.0  # block edge length range, metres
    block_max: float = 80.0
    street_width: float = 16.0  # kerb to kerb plus sidewalks
    moving_cars: int = 20
    pedestrians: int = 40
    parked_car_fill: float = 0.5  # fraction of parking slots occupied

    def __post_init__(self) -> None:
        positive("town", self, "blocks_x", "blocks_y", "block_min", "block_max", "street_width")
        non_negative("town", self, "moving_cars", "pedestrians")
        require(self.block_max >= self.block_min >= 20, "town.block_max", self.block_max, "block_max >= block_min >= 20")
        require(0 <= self.parked_car_fill <= 1, "town.parked_car_fill", self.parked_car_fill, "0..1")
        require(14 <= self.street_width <= 30, "town.street_width", self.street_width, "14..30 metres")


@dataclass(frozen=True)
class RouteConfig:
    loop_blocks_x: int = 2  # the ego drives around a rectangle of this many blocks (so it revisits each lap)
    loop_blocks_y: int = 1
    speed: float = 8.0  # m/s mean
    speed_variation: float = 0.15  # relative amplitude of a slow speed modulation
    shift_sessions: bool = True  # sessions 1, 2, 4, 5, ... drive the loop moved by one block (partial overlap)

    def __post_init__(self) -> None:
        positive("route", self, "loop_blocks_x", "loop_blocks_y", "speed")
        require(0 <= self.speed_variation < 0.9, "route.speed_variation", self.speed_variation, "0 <= x < 0.9")


def _range(prefix: str, obj: Any, name: str, lo: float, hi: float) -> None:
    v = getattr(obj, name)
    require(len(v) == 2 and lo <= v[0] <= v[1] <= hi, f"{prefix}.{name}", v,
            f"[low, high] with {lo:g} <= low <= high <= {hi:g}")


@dataclass(frozen=True)
class RigDrawConfig:
    """Per-session sensor rigs (``draw: true`` or ``cmr-fusion simulate --draw-rigs``): each session draws its camera,
    LiDAR and radar from these ranges (``[low, high]``, uniform; ``lidar_beams`` and ``lidar_columns`` are lists of
    choices), seeded by the town seed and the session index. The drawn values replace the ``camera``, ``lidar`` and
    ``radar`` sections' and are written into the bag (``/tf_static`` mounts, ``CameraInfo``) and ``town.json``."""

    draw: bool = False
    camera_width: tuple[float, float] = (320.0, 1280.0)  # pixels (rounded to a multiple of 8)
    camera_aspect: tuple[float, float] = (1.25, 1.78)  # width / height
    camera_hfov_deg: tuple[float, float] = (60.0, 120.0)
    camera_x_m: tuple[float, float] = (0.5, 2.0)  # mount in base_link
    camera_y_m: tuple[float, float] = (-0.3, 0.3)
    camera_z_m: tuple[float, float] = (1.2, 2.0)
    lidar_beams: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0)  # choices
    lidar_columns: tuple[float, ...] = (512.0, 1024.0, 2048.0)  # choices
    lidar_vfov_min_deg: tuple[float, float] = (-30.0, -15.0)
    lidar_vfov_max_deg: tuple[float, float] = (2.0, 22.0)
    lidar_x_m: tuple[float, float] = (0.0, 1.5)
    lidar_z_m: tuple[float, float] = (1.4, 2.4)
    radar_hfov_deg: tuple[float, float] = (60.0, 120.0)
    radar_max_points: tuple[float, float] = (48.0, 256.0)
    radar_noise_scale: tuple[float, float] = (0.5, 2.0)  # multiplies the range, azimuth and Doppler noise
    radar_x_m: tuple[float, float] = (2.5, 3.8)
    radar_z_m: tuple[float, float] = (0.3, 1.0)

    def __post_init__(self) -> None:
        require(isinstance(self.draw, bool), "rig.draw", self.draw, "true or false")
        _range("rig", self, "camera_width", 16, 4096)
        _range("rig", self, "camera_aspect", 0.2, 5)
        _range("rig", self, "camera_hfov_deg", 1, 169)
        _range("rig", self, "lidar_vfov_min_deg", -89, 89)
        _range("rig", self, "lidar_vfov_max_deg", -89, 89)
        require(self.lidar_vfov_max_deg[0] > self.lidar_vfov_min_deg[1], "rig.lidar_vfov_max_deg",
                self.lidar_vfov_max_deg, "every value above rig.lidar_vfov_min_deg's")
        _range("rig", self, "radar_hfov_deg", 1, 179)
        _range("rig", self, "radar_max_points", 1, 100000)
        _range("rig", self, "radar_noise_scale", 0, 100)
        for key in ("camera_x_m", "camera_y_m", "camera_z_m", "lidar_x_m", "lidar_z_m", "radar_x_m", "radar_z_m"):
            _range("rig", self, key, -10, 10)
        for key in ("lidar_beams", "lidar_columns"):
            v = getattr(self, key)
            require(len(v) >= 1 and all(float(x).is_integer() and 1 <= x <= 8192 for x in v), f"rig.{key}", v,
                    "a list of integers in 1..8192 to choose from")


@dataclass(frozen=True)
class SimConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    radar: RadarConfig = field(default_factory=RadarConfig)
    odom: OdomConfig = field(default_factory=OdomConfig)
    town: TownConfig = field(default_factory=TownConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    rig: RigDrawConfig = field(default_factory=RigDrawConfig)

    def __post_init__(self) -> None:
        loop = self.route
        require(loop.loop_blocks_x <= self.town.blocks_x, "route.loop_blocks_x", loop.loop_blocks_x, f"<= town.blocks_x ({self.town.blocks_x})")
        require(loop.loop_blocks_y <= self.town.blocks_y, "route.loop_blocks_y", loop.loop_blocks_y, f"<= town.blocks_y ({self.town.blocks_y})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, source: str | None = None) -> "SimConfig":
        data = dict(data or {})
        sections = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name not in sections:
                raise ConfigError(name, value, "one of " + ", ".join(sections), source=source)
            section_cls = sections[name].default_factory  # type: ignore[misc]
            if not isinstance(value, dict):
                raise ConfigError(name, value, "a mapping of keys", source=source)
            allowed = {f.name: f for f in dataclasses.fields(section_cls)}
            sub: dict[str, Any] = {}
            for key, v in value.items():
                if key not in allowed:
                    raise ConfigError(f"{name}.{key}", v, "one of " + ", ".join(allowed), source=source)
                default = getattr(section_cls(), key)
                sub[key] = _coerce(f"{name}.{key}", v, default, source)
            try:
                kwargs[name] = section_cls(**sub)
            except ConfigError as err:
                raise ConfigError(err.key, err.value, err.allowed, source=source) from None
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(err.key, err.value, err.allowed, source=source) from None


def _coerce(key: str, value: Any, default: Any, source: str | None) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false", source=source)
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, "an integer", source=source)
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, "a number", source=source)
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(key, value, "a string", source=source)
        return value
    if isinstance(default, tuple):
        if key in ("rig.lidar_beams", "rig.lidar_columns"):  # lists of choices: any length
            default = tuple(value) if isinstance(value, (list, tuple)) and value else default + (0.0,)
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(key, value, f"a list of {len(default)} numbers", source=source)
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(key, value, f"a list of {len(default)} numbers", source=source) from None
    return value


def load_sim_config(path: str | Path | None = None) -> SimConfig:
    """The defaults, overridden by the YAML file at `path` (if given)."""
    if path is None:
        return SimConfig()
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError("config", str(p), f"a readable YAML file ({err.strerror})") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("config", str(p), f"valid YAML ({err})") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError("config", str(p), "a YAML mapping of sections", source=str(p))
    return SimConfig.from_dict(data, source=str(p))
