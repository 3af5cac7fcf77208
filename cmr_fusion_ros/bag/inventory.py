"""Which modalities a bag holds, and which of them a command uses (``--modalities``).

A bag may hold any two or more of camera, LiDAR and radar: :func:`bag_modalities` finds the topics present (with the
right message type) without reading a message, and :func:`choose_modalities` intersects them with what the user asked
for. A modality that is absent is not an error unless the user asked for it by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from cmr_fusion_ros.core.errors import BagError, ConfigError
from cmr_fusion_ros.core.types import Modality

__all__ = ["MODALITIES", "bag_modalities", "choose_modalities", "parse_modalities", "pair_names"]

MODALITIES = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CLOUD = "sensor_msgs/msg/PointCloud2"


def parse_modalities(text: str | Sequence[str] | None) -> tuple[Modality, ...] | None:
    """``"camera,lidar"`` (or ``["camera", "lidar"]``) -> modalities in canonical order; None stays None (all)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    names = [s.strip().lower() for s in items if s.strip()]
    allowed = "a comma-separated subset of camera, lidar, radar, e.g. camera,lidar"
    if not names:
        raise ConfigError("--modalities", text, allowed)
    try:
        chosen = {Modality(n) for n in names}
    except ValueError:
        raise ConfigError("--modalities", text, allowed) from None
    return tuple(m for m in MODALITIES if m in chosen)


def bag_modalities(path: str | Path, topics) -> dict[Modality, str]:
    """Modality -> topic for each modality whose topic (``topics``: a :class:`~cmr_fusion_ros.bag.reader.BagTopics`)
    is in the bag with a sensor message type; reads only the bag's metadata."""
    from rosbags.highlevel import AnyReader

    p = Path(path)
    if not p.exists():
        raise BagError(str(p), "no such bag")
    try:
        with AnyReader([p]) as reader:
            present = {c.topic: c.msgtype for c in reader.connections}
    except Exception as err:  # rosbags raises several unrelated error types
        raise BagError(str(p), f"cannot open as a rosbag2 bag: {err}") from err
    out: dict[Modality, str] = {}
    cam = next((t for t in topics.camera if present.get(t) in IMAGE_TYPES), None)
    if cam is not None:
        out[Modality.CAMERA] = cam
    for m, t in ((Modality.LIDAR, topics.lidar), (Modality.RADAR, topics.radar)):
        if present.get(t) == CLOUD:
            out[m] = t
    return out


def choose_modalities(
    available: Iterable[Modality],
    requested: Sequence[Modality] | None,
    where: str,
    *,
    minimum: int = 2,
) -> tuple[Modality, ...]:
    """The modalities to use from ``available`` (those in a bag): all of them, or ``requested`` (each must be
    available: asking for a modality by name that the bag lacks is an error). Fewer than ``minimum`` is an error."""
    have = set(available)
    if requested is not None:
        missing = [m.value for m in requested if m not in have]
        if missing:
            raise BagError(where, f"--modalities asks for {', '.join(missing)}, which the bag lacks (it has: "
                                  f"{', '.join(m.value for m in MODALITIES if m in have) or 'none'})")
        chosen = tuple(requested)
    else:
        chosen = tuple(m for m in MODALITIES if m in have)
    if len(chosen) < minimum:
        raise BagError(where, f"needs at least {minimum} of camera, lidar, radar; found "
                              f"{', '.join(m.value for m in chosen) or 'none'} (check the --*-topic options)")
    return chosen


def pair_names(queries: Iterable[Modality], database: Iterable[Modality]) -> tuple[list[str], list[str]]:
    """(present, absent) ``query->database`` pair names of the 9 for these modality sets."""
    q, d = set(queries), set(database)
    present, absent = [], []
    for a in MODALITIES:
        for b in MODALITIES:
            (present if a in q and b in d else absent).append(f"{a.value}->{b.value}")
    return present, absent
