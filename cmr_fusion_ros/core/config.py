"""The one configuration type of the pipeline: ``FusionConfig`` (frozen, validating, no ROS).

It composes the sections of the subsystems (``memory`` -> :class:`MemoryConfig`, ``policy`` -> :class:`PolicyConfig`)
with the pipeline's own (``streams``, ``limits``, ``odometry``, ``sync``, ``encoders``, ``output``). Sources:

* a nested dict, e.g. the ``ros__parameters`` of a YAML file: :meth:`FusionConfig.from_dict`;
* a parameter file in ``node_name: ros__parameters:`` form: :meth:`FusionConfig.from_yaml`;
* flat ROS parameters with dotted names (``memory.index.backend``): :func:`unflatten` then ``from_dict``.

Every key is described in :data:`PARAMETERS` (description, range, read-only or tunable at run time); the ROS adapter
declares exactly those, so the YAML files, the node and this module cannot drift apart (a test checks it).
Bad values raise :class:`ConfigError` naming the full key, the value and what is allowed; unknown keys too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory.config import MemoryConfig
from cmr_fusion_ros.core.policy import PolicyConfig
from cmr_fusion_ros.core.radar import RadarFields
from cmr_fusion_ros.core.rig import RigOptions
from cmr_fusion_ros.core.types import MAX_LIDAR_VIEWS, Modality
from cmr_fusion_ros.core.validate import (no_unknown, read_bool, read_choice, read_float, read_int, read_str,
                                          section)

__all__ = [
    "EncodersConfig",
    "FusionConfig",
    "InputLimits",
    "OdometryConfig",
    "OutputConfig",
    "PARAMETERS",
    "ParamSpec",
    "StreamConfig",
    "SyncConfig",
    "flatten",
    "load_parameter_file",
    "render_parameter_file",
    "unflatten",
]

NS = 1_000_000_000
RELIABILITY = ("best_effort", "reliable")
TRANSPORTS = ("compressed", "raw")
PROVIDERS = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
LIMIT_MAX = 2**31 - 1  # the largest input limit (a ROS integer parameter range ends there too)
TIME_JUMP_MAX_S = 86400.0


def _list_of_str(d: Mapping[str, Any], prefix: str, name: str, default: tuple[str, ...],
                 choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    value = d.get(name, list(default))
    allowed = "a list of strings" + (f" from {' | '.join(choices)}" if choices else "")
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{prefix}.{name}", value, allowed)
    for v in value:
        if not isinstance(v, str) or (choices and v not in choices):
            raise ConfigError(f"{prefix}.{name}", v, allowed)
    return tuple(value)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One sensor input. ``topic`` stays relative so namespaces and remapping work."""

    enabled: bool = True
    topic: str = ""
    transport: str = "raw"  # camera only: compressed (sensor_msgs/CompressedImage) | raw (sensor_msgs/Image)
    reliability: str = "best_effort"
    depth: int = 5
    queue_size: int = 2
    radar_fields: RadarFields = field(default_factory=RadarFields)

    @classmethod
    def from_dict(cls, d: Any, prefix: str, modality: Modality) -> "StreamConfig":
        d = section(d, prefix)
        keys = ("enabled", "topic", "reliability", "depth", "queue_size")
        keys += ("transport",) if modality is Modality.CAMERA else ()
        keys += ("fields",) if modality is Modality.RADAR else ()
        no_unknown(d, prefix, keys)
        default = _DEFAULT_STREAMS[modality]
        topic = read_str(d, prefix, "topic", default.topic)
        enabled = read_bool(d, prefix, "enabled", True)
        if enabled and not topic:
            raise ConfigError(f"{prefix}.topic", topic, "a topic name (relative, e.g. lidar/points)")
        radar = RadarFields()
        if modality is Modality.RADAR:
            fd = section(d.get("fields"), f"{prefix}.fields")
            no_unknown(fd, f"{prefix}.fields", ("x", "y", "z", "doppler", "rcs"))
            radar = RadarFields(**{k: read_str(fd, f"{prefix}.fields", k, getattr(RadarFields(), k))
                                   for k in ("x", "y", "z", "doppler", "rcs")})
        return cls(
            enabled=enabled,
            topic=topic,
            transport=read_choice(d, prefix, "transport", default.transport, TRANSPORTS),
            reliability=read_choice(d, prefix, "reliability", "best_effort", RELIABILITY),
            depth=read_int(d, prefix, "depth", 5, 1, 1000),
            queue_size=read_int(d, prefix, "queue_size", 2, 1, 1000),
            radar_fields=radar,
        )


_DEFAULT_STREAMS = {
    Modality.CAMERA: StreamConfig(topic="camera/image/compressed", transport="compressed"),
    Modality.LIDAR: StreamConfig(topic="lidar/points"),
    Modality.RADAR: StreamConfig(topic="radar/points"),
}


@dataclass(frozen=True, slots=True)
class OdometryConfig:
    topic: str = "odom"  # '' = no poses
    max_gap_s: float = 1.0
    max_extrapolation_s: float = 0.2

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "odometry") -> "OdometryConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, ("topic", "max_gap_s", "max_extrapolation_s"))
        return cls(
            topic=read_str(d, prefix, "topic", "odom"),
            max_gap_s=read_float(d, prefix, "max_gap_s", 1.0, 0.0, 60.0),
            max_extrapolation_s=read_float(d, prefix, "max_extrapolation_s", 0.2, 0.0, 10.0),
        )


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Section ``limits``: sanity limits on one sensor message, checked on the sizes a message *claims* before
    anything is allocated or decoded, so a corrupt header (a PointCloud2 claiming billions of points, a PNG header
    claiming 100k x 100k pixels) costs the message, not the process. The defaults are far above real sensors (a 4K
    camera has 8.3 Mpx, a 128-beam LiDAR about 260k points per scan)."""

    max_image_pixels: int = 4096 * 4096
    max_points: int = 2_000_000
    max_message_bytes: int = 256 * 1024 * 1024

    KEYS = ("max_image_pixels", "max_points", "max_message_bytes")

    def __post_init__(self) -> None:
        for name in self.KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
                raise ConfigError(f"limits.{name}", value, f"an integer in [1, {LIMIT_MAX}]")

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "limits") -> "InputLimits":
        d = section(d, prefix)
        no_unknown(d, prefix, cls.KEYS)
        default = cls()
        return cls(**{name: read_int(d, prefix, name, getattr(default, name), 1, LIMIT_MAX) for name in cls.KEYS})


DEFAULT_JUMP_BACK_NS = 1_000_000_000  # sync.time_jump_s = 0


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Time lines. Frames are processed one by one as they arrive (no frame sets), so only time going back matters:
    ``time_jump_s`` (0 = 1 s)."""

    time_jump_s: float = 0.0

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "sync") -> "SyncConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, ("time_jump_s",))
        return cls(time_jump_s=read_float(d, prefix, "time_jump_s", 0.0, 0.0, TIME_JUMP_MAX_S))

    @property
    def jump_back_ns(self) -> int:
        """How far back (ns) a stamp must go to start a new time line: ``time_jump_s``, or 1 s when that is 0."""
        return round(self.time_jump_s * 1e9) if self.time_jump_s > 0 else DEFAULT_JUMP_BACK_NS


@dataclass(frozen=True, slots=True)
class EncodersConfig:
    models_dir: str = ""  # '' = the package's installed models
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1
    batch_size: int = 8
    warmup_runs: int = 2
    lidar_views: int = 16  # LiDAR -> LiDAR search with the scan turned to this many headings (1 = as scanned only)

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "encoders") -> "EncodersConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, ("models_dir", "providers", "intra_op_threads", "batch_size", "warmup_runs",
                                "lidar_views"))
        providers = _list_of_str(d, prefix, "providers", ("CPUExecutionProvider",), PROVIDERS)
        if not providers:
            raise ConfigError(f"{prefix}.providers", [], "a non-empty list from " + " | ".join(PROVIDERS))
        return cls(
            models_dir=read_str(d, prefix, "models_dir", ""),
            providers=providers,
            intra_op_threads=read_int(d, prefix, "intra_op_threads", 1, 0, 256),
            batch_size=read_int(d, prefix, "batch_size", 8, 1, 4096),
            warmup_runs=read_int(d, prefix, "warmup_runs", 2, 0, 100),
            lidar_views=read_int(d, prefix, "lidar_views", 16, 1, MAX_LIDAR_VIEWS),
        )


@dataclass(frozen=True, slots=True)
class OutputConfig:
    insert_queries: bool = True  # every processed frame is also remembered (subject to admission)
    markers: bool = True
    marker_frame: str = "odom"
    diagnostics_period_s: float = 1.0
    diagnostics_window_s: float = 10.0  # levels from the drops / bad messages / errors of this recent window

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "output") -> "OutputConfig":
        d = section(d, prefix)
        no_unknown(d, prefix, ("insert_queries", "markers", "marker_frame", "diagnostics_period_s",
                               "diagnostics_window_s"))
        return cls(
            insert_queries=read_bool(d, prefix, "insert_queries", True),
            markers=read_bool(d, prefix, "markers", True),
            marker_frame=read_str(d, prefix, "marker_frame", "odom"),
            diagnostics_period_s=read_float(d, prefix, "diagnostics_period_s", 1.0, 0.05, 3600.0),
            diagnostics_window_s=read_float(d, prefix, "diagnostics_window_s", 10.0, 0.1, 86400.0),
        )


# Parameters ROS itself reads (sim time, the type description service, QoS overrides): never the pipeline's.
ROS_OWN_KEYS = ("use_sim_time", "start_type_description_service", "qos_overrides")


@dataclass(frozen=True, slots=True)
class FusionConfig:
    session: str = ""
    streams: tuple[tuple[Modality, StreamConfig], ...] = tuple(_DEFAULT_STREAMS.items())
    limits: InputLimits = field(default_factory=InputLimits)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    rig: RigOptions = field(default_factory=RigOptions)

    KEYS = ("session", "streams", "limits", "odometry", "sync", "encoders", "memory", "policy", "output", "rig")

    @classmethod
    def from_dict(cls, d: Any, *, source: str | None = None) -> "FusionConfig":
        try:
            d = section(d, "ros__parameters")
            d = {k: v for k, v in d.items() if k not in ROS_OWN_KEYS and not str(k).startswith("qos_overrides.")}
            _no_unknown_top(d, cls.KEYS)
            sd = section(d.get("streams"), "streams")
            no_unknown(sd, "streams", tuple(m.value for m in Modality))
            streams = tuple((m, StreamConfig.from_dict(sd.get(m.value), f"streams.{m.value}", m)) for m in Modality)
            if not any(s.enabled for _, s in streams):
                raise ConfigError("streams", {m.value: False for m in Modality}, "at least one enabled stream")
            session = d.get("session") or ""
            if not isinstance(session, str):
                raise ConfigError("session", session, "a string")
            return cls(
                session=session,
                streams=streams,
                limits=InputLimits.from_dict(d.get("limits")),
                odometry=OdometryConfig.from_dict(d.get("odometry")),
                sync=SyncConfig.from_dict(d.get("sync")),
                encoders=EncodersConfig.from_dict(d.get("encoders")),
                memory=MemoryConfig.from_dict(d.get("memory")),
                policy=PolicyConfig.from_dict(d.get("policy")),
                output=OutputConfig.from_dict(d.get("output")),
                rig=RigOptions.from_dict(dict(section(d.get("rig"), "rig"))),
            )
        except ConfigError as err:
            if source and not err.source:
                raise ConfigError(err.key.lstrip("."), err.value, err.allowed, source=source) from None
            raise

    @classmethod
    def from_yaml(cls, path: str | Path, node_name: str | None = None) -> "FusionConfig":
        return cls.from_dict(load_parameter_file(path, node_name), source=str(path))

    def stream(self, modality: Modality) -> StreamConfig:
        return dict(self.streams)[Modality(modality)]

    @property
    def enabled_modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m, s in self.streams if s.enabled)

    def session_id(self) -> str:
        return self.session or time.strftime("session_%Y%m%dT%H%M%S", time.gmtime())

    def to_dict(self) -> dict[str, Any]:
        """The nested dict that ``from_dict`` reads back to an equal config."""
        out: dict[str, Any] = {"session": self.session, "streams": {}}
        for m, s in self.streams:
            sd: dict[str, Any] = {"enabled": s.enabled, "topic": s.topic, "reliability": s.reliability,
                                  "depth": s.depth, "queue_size": s.queue_size}
            if m is Modality.CAMERA:
                sd["transport"] = s.transport
            if m is Modality.RADAR:
                sd["fields"] = {k: getattr(s.radar_fields, k) for k in ("x", "y", "z", "doppler", "rcs")}
            out["streams"][m.value] = sd
        for name in ("limits", "odometry", "sync", "encoders", "memory", "output"):
            out[name] = _dc_to_dict(getattr(self, name))
        pol = _dc_to_dict(self.policy)
        pol["routes"] = {q.value: [t.value for t in ts] for q, ts in self.policy.routes}
        out["policy"] = pol
        out["rig"] = self.rig.to_dict()
        return out


def _no_unknown_top(d: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for k in d:
        if k not in known:
            raise ConfigError(str(k), d[k], f"a known key ({', '.join(known)})")


def _dc_to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _dc_to_dict(getattr(obj, f.name)) for f in fields(obj) if f.name.isidentifier()
                and not f.name.isupper()}
    if isinstance(obj, tuple):
        return [_dc_to_dict(v) for v in obj]
    if isinstance(obj, Modality):
        return obj.value
    return obj


# --- flat (ROS parameter) form ----------------------------------------------------------------------------------

def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, value, f"no value at '{p}' (it is a section)")
        node[leaf] = value
    return out


def load_parameter_file(path: str | Path, node_name: str | None = None) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` (or of the only / wildcard node) in a ROS 2 parameter file."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as err:
        raise ConfigError("params_file", str(p), f"a readable YAML file ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError("params_file", str(p), f"valid YAML ({err})") from err
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("params_file", str(p), "a mapping 'node_name: {ros__parameters: {...}}'")
    candidates = [node_name, f"/{node_name}" if node_name else None, "/**", "**"]
    section = None
    for c in candidates:
        if c and c in data:
            section = data[c]
            break
    if section is None:
        if node_name is None and len(data) == 1:
            section = next(iter(data.values()))
        else:
            raise ConfigError("params_file", str(p), f"a section for node {node_name!r} or '/**' (has {list(data)})")
    if not isinstance(section, Mapping) or "ros__parameters" not in section:
        raise ConfigError("params_file", str(p), "node sections of the form 'node_name: {ros__parameters: {...}}'")
    params = section["ros__parameters"]
    return dict(params) if isinstance(params, Mapping) else {}


# --- parameter descriptions ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    description: str
    read_only: bool = True
    min: float | None = None
    max: float | None = None


def _spec(name: str, description: str, rng: tuple[float | None, float | None] = (None, None), *, tunable: bool = False) -> ParamSpec:
    return ParamSpec(name, description, read_only=not tunable, min=rng[0], max=rng[1])


_STREAM_DOCS = []
for _m in Modality:
    _p = f"streams.{_m.value}"
    _STREAM_DOCS += [
        _spec(f"{_p}.enabled", f"subscribe to the {_m.value} stream"),
        _spec(f"{_p}.topic", f"{_m.value} topic (relative, so namespaces and remapping apply)"),
        _spec(f"{_p}.reliability", "QoS reliability of the subscription: best_effort | reliable"),
        _spec(f"{_p}.depth", "QoS history depth of the subscription", (1, 1000)),
        _spec(f"{_p}.queue_size", "bounded queue between the subscription and the pipeline; the oldest frame is "
                                  "dropped (and counted) when it is full (latest wins)", (1, 1000)),
    ]
_STREAM_DOCS.append(_spec("streams.camera.transport", "compressed (sensor_msgs/CompressedImage) | raw (sensor_msgs/Image)"))
for _f in ("x", "y", "z", "doppler", "rcs"):
    _STREAM_DOCS.append(_spec(f"streams.radar.fields.{_f}", f"name of the radar PointCloud2 field holding '{_f}'"
                              + (" ('' = none, 0 is used)" if _f in ("z", "rcs") else "")))

PARAMETERS: tuple[ParamSpec, ...] = (
    _spec("session", "id of this drive/recording stored with every entry ('' = start time)"),
    *_STREAM_DOCS,
    _spec("limits.max_image_pixels", "camera images claiming more pixels (width x height, from the message or the "
                                      "PNG/JPEG header) are rejected before decoding", (1, None)),
    _spec("limits.max_points", "point clouds claiming more points (width x height) are rejected", (1, None)),
    _spec("limits.max_message_bytes", "sensor messages with a larger data field are rejected", (1, None)),
    _spec("odometry.topic", "nav_msgs/Odometry topic giving the poses of the match events and moving the earlier scans "
          "a multi-scan radar model merges ('' = no poses: single scans)"),
    _spec("odometry.max_gap_s", "no pose is interpolated between odometry messages further apart", (0, 60)),
    _spec("odometry.max_extrapolation_s", "no pose for a stamp further than this outside the odometry", (0, 10)),
    _spec("sync.time_jump_s", "stamps (or /clock) going back by more than this start a new time line: match policy, "
                              "multi-scan history and pose buffer reset (0 = 1 s)", (0, TIME_JUMP_MAX_S)),
    _spec("encoders.models_dir", "folder with camera.onnx, lidar.onnx, radar.onnx and their cards ('' = installed)"),
    _spec("encoders.providers", "onnxruntime execution providers in order of preference (CPU is the fallback)"),
    _spec("encoders.intra_op_threads", "onnxruntime threads per encoder (0 = onnxruntime decides)", (0, 256)),
    _spec("encoders.batch_size", "largest batch per encoder run", (1, 4096)),
    _spec("encoders.warmup_runs", "encoder runs on zeros at start-up", (0, 100)),
    _spec("encoders.lidar_views", "LiDAR->LiDAR search (policy.routes.lidar has lidar) with the scan also turned to "
                                  "N headings, each entry scored by its best view: finds places driven in another "
                                  "direction; N LiDAR preprocessings and encodings per scan (1 = as scanned; 8 halves "
                                  "the cost of dense scans); a LiDAR encoder_node sends the views in Embedding.views",
          (1, MAX_LIDAR_VIEWS)),
    _spec("memory.dim", "embedding size; must equal the encoders'", (1, 65536)),
    _spec("memory.index.backend", "exact | faiss_flat | faiss_hnsw | faiss_ivf"),
    _spec("memory.index.hnsw_m", "HNSW graph degree", (4, 256)),
    _spec("memory.index.hnsw_ef_construction", "HNSW build effort", (8, 4096)),
    _spec("memory.index.hnsw_ef_search", "HNSW search effort", (1, 65536)),
    _spec("memory.index.ivf_nlist", "IVF cells", (1, 1 << 20)),
    _spec("memory.index.ivf_nprobe", "IVF cells searched per query", (1, 1 << 20)),
    _spec("memory.index.ivf_train_size", "entries before IVF is trained (0 = 39 x nlist)", (0, None)),
    _spec("memory.index.filter_exact_below", "filtered searches over at most this many entries are exact", (0, None)),
    _spec("memory.index.compact_fraction", "rebuild the index when this fraction of it is deleted", (0.01, 1.0)),
    _spec("memory.index.faiss_threads", "OpenMP threads of FAISS, process-wide (0 = FAISS default; 1 suits a node "
                                        "adding one vector at a time)", (0, 1024)),
    _spec("memory.capacity.max_entries", "entries kept (0 = unlimited)", (0, None)),
    _spec("memory.capacity.eviction", "oldest | oldest_same_modality | reject"),
    _spec("memory.admission.enabled", "skip near-duplicate entries", tunable=False),
    _spec("memory.admission.duplicate_cosine", "cosine above which a new entry is a near-duplicate", (-1, 1)),
    _spec("memory.admission.duplicate_distance_m", "... if the sensor also moved less than this", (0, None)),
    _spec("memory.persistence.directory", "where the memory is persisted ('' = RAM only)"),
    _spec("memory.persistence.flush_interval_s", "journal flush interval: a crash loses at most this much", (0, 3600)),
    _spec("memory.persistence.snapshot_every_n", "journal records between snapshots (0 = on save/close)", (0, None)),
    _spec("memory.persistence.save_index", "store the FAISS index beside the snapshot"),
    _spec("memory.store", "local (a folder on this robot: memory.persistence) | postgres (a shared PostgreSQL + "
                          "pgvector database: memory.postgres)"),
    _spec("memory.robot_id", "robot id stored with every entry and in match events ('' = the node's namespace, "
                             "else the host name)"),
    _spec("memory.postgres.uri", "postgresql://[user@]host[:port]/db[?sslmode=verify-full] of a server with "
                                 "pgvector; never a password (see memory.postgres.passfile)"),
    _spec("memory.postgres.passfile", "libpq password file with the secret ('' = PGPASSFILE, ~/.pgpass, service file)"),
    _spec("memory.postgres.write_queue", "entries buffered while the database is slow or away (oldest dropped)",
          (1, None)),
    _spec("memory.postgres.batch_size", "entries per write transaction of the background writer", (1, 100000)),
    _spec("memory.postgres.retry_interval_s", "wait between reconnection attempts", (0.01, 3600)),
    _spec("memory.postgres.connect_timeout_s", "limit of one connection attempt", (0.1, 600)),
    _spec("memory.postgres.statement_timeout_ms", "a slower search fails soft, counted (0 = no limit)", (0, None)),
    _spec("policy.routes.camera", "memory modalities a camera query searches", tunable=True),
    _spec("policy.routes.lidar", "memory modalities a LiDAR query searches", tunable=True),
    _spec("policy.routes.radar", "memory modalities a radar query searches", tunable=True),
    _spec("policy.top_k", "neighbours per query and memory modality", (1, 1000), tunable=True),
    _spec("policy.min_score", "cosine score threshold of a match", (-1, 1), tunable=True),
    _spec("policy.min_probability", "calibrated probability of a true revisit a match needs (the model cards' "
          "score_calibration, per modality pair; 0 = off; pairs without a calibration: min_score only)", (0, 1),
          tunable=True),
    _spec("policy.exclude_recent_s", "entries newer than the query minus this are not candidates", (0, None), tunable=True),
    _spec("policy.exclude_same_session", "only match entries of other sessions", tunable=True),
    _spec("policy.match_robots", "whose entries may match: all | others (only other robots' entries) | own",
          tunable=True),
    _spec("policy.debounce_s", "one event per revisit: a place fires again only after this long without support",
          (0, None), tunable=True),
    _spec("policy.rearm_distance_m", "... or once the query moved this far from where it fired (0 = off)", (0, None), tunable=True),
    _spec("policy.place_radius_m", "matches within this distance are the same place", (0, None), tunable=True),
    _spec("policy.place_window_s", "without poses: matched stamps within this are the same place", (0, None), tunable=True),
    _spec("policy.sequence_length", "consecutive consistent matches needed before firing", (1, 1000), tunable=True),
    _spec("policy.sequence_max_jump_m", "consistent: matched poses within this of the previous", (0, None), tunable=True),
    _spec("policy.sequence_max_gap_s", "consistent without poses: matched stamps within this", (0, None), tunable=True),
    _spec("policy.turned_view_penalty", "subtracted from the cosine scores a LiDAR scan's turned views find "
                                        "(encoders.lidar_views): the scan as scanned wins near ties", (0, 2),
          tunable=True),
    _spec("output.insert_queries", "remember every processed frame (subject to admission)"),
    _spec("output.markers", "publish visualization_msgs/MarkerArray of matches on ~/markers"),
    _spec("output.marker_frame", "frame of the markers (the odometry frame)"),
    _spec("output.diagnostics_period_s", "period of /diagnostics", (0.05, 3600)),
    _spec("output.diagnostics_window_s", "a /diagnostics status is WARN (drops, bad messages) or ERROR (processing "
          "errors) while such happened in the last this many seconds, OK again after; the counts since start stay "
          "in its values", (0.1, 86400)),
    _spec("rig.enabled", "bring each sensor's data to the rig the models were trained on (core/rig.py); false: the "
                         "data as received"),
    _spec("rig.mount", "LiDAR and radar points moved to the canonical sensor's mount (needs the sensor's mount)"),
    _spec("rig.crop_fov", "points outside the canonical sensor's field of view dropped (off: no gain measured on "
                          "the simulated rigs, models/README.md)"),
    _spec("rig.density", "a sparser LiDAR's returns made between beams / columns up to the canonical angular density"),
    _spec("rig.ground_fill", "LiDAR: the flat ground the training LiDAR sees closer in than this one (a narrower "
                             "or higher-cut vertical field of view) added where the nearest return is ground"),
    _spec("rig.thin", "a denser LiDAR's returns thinned evenly to the canonical angular density (off: no gain "
                      "measured on the simulated rigs, models/README.md)"),
    _spec("rig.intensity", "LiDAR intensity: keep | auto (rescaled per sensor when its 90th percentile is off the "
                           "canonical by more than intensity_tolerance) | drop"),
    _spec("rig.intensity_tolerance", "factor within which a LiDAR's intensity scale is left alone", (1, None)),
    _spec("rig.camera_view", "camera images resampled to the canonical camera's intrinsics and orientation (needs "
                             "the camera's intrinsics)"),
    _spec("rig.camera_border", "fill outside a narrower camera's image: replicate | reflect | mean | black"),
    _spec("rig.camera_pad", "a narrower camera padded to the canonical field of view (false: kept as it is)"),
    _spec("rig.camera_mount", "base_link <- camera optical frame: 'x y z [roll pitch yaw | qx qy qz qw]' ('' = not "
                              "given: eval and train take it from the bag's /tf_static, process with --rig-from-bag)"),
    _spec("rig.lidar_mount", "base_link <- LiDAR frame, same form and fallback"),
    _spec("rig.radar_mount", "base_link <- radar frame, same form and fallback"),
    _spec("rig.camera_intrinsics", "'width height fx fy cx cy' of the camera ('' = not given: eval and train take the "
                                   "bag's CameraInfo, process with --rig-from-bag)"),
)


def render_parameter_file(nodes: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """A ROS 2 parameter file (``node_name: ros__parameters: ...``) with each parameter's description as a comment.

    ``nodes`` maps node names to nested parameter dicts (e.g. ``FusionConfig().to_dict()``).
    """
    import json

    docs = {p.name: p for p in PARAMETERS}
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header else []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return json.dumps(str(v))

    def emit(d: Mapping[str, Any], indent: int, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            pad = "  " * indent
            if isinstance(v, Mapping):
                lines.append(f"{pad}{k}:")
                emit(v, indent + 1, key)
                continue
            spec = docs.get(key)
            note = ""
            if spec is not None:
                rng = ""
                if spec.min is not None or spec.max is not None:
                    lo = "" if spec.min is None else f"{spec.min:g}"
                    hi = "" if spec.max is None else f"{spec.max:g}"
                    rng = f" [{lo}..{hi}]"
                note = f"  # {spec.description}{rng}{'' if spec.read_only else ' (tunable at run time)'}"
            lines.append(f"{pad}{k}: {scalar(v)}{note}")

    for node, params in nodes.items():
        lines.append(f"{node}:")
        lines.append("  ros__parameters:")
        emit(params, 2, "")
    return "\n".join(lines) + "\n"
