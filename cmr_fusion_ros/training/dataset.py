"""Training frames from bags: time-synchronised (camera, LiDAR, radar, or any two of them) tensors with ground-truth
positions.

Each bag is read once with :func:`cmr_fusion_ros.bag.reader.read_samples` (the runtime's decoder and pose buffer);
every sample goes through the runtime's route up to the tensor (:meth:`cmr_fusion_ros.core.embed.FrameEmbedder.tensors`:
multi-scan merging, the card's preprocessing), and each LiDAR scan is paired with the camera image and
radar scan nearest in time (within ``sync_tolerance_ns``). Frames are cached per bag in an ``.npz`` keyed by the
preprocessing parameters and topics, so a second training run does not decode the bags again.

Positions are only comparable inside a *place group*: by default the folder that holds the bag (the simulator writes
all sessions of one town into one folder, with /odom in the town frame). Bags of a user's own data go into one folder
only when their odometry shares one fixed frame.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr_fusion_ros.bag.reader import BagTopics, count_rejected, read_samples
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.core.embed import FrameEmbedder
from cmr_fusion_ros.core.preprocess import Preprocessing
from cmr_fusion_ros.core.rig import RigOptions, rig_adapters
from cmr_fusion_ros.core.types import Modality

__all__ = ["FrameSet", "load_frames", "frames_from_bag", "nearest_stamps", "MODALITIES"]

MODALITIES = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)
CACHE_VERSION = 2  # 2: the runtime decoder (finite-point filter, JPEG reduced decode) and pose buffer (gap rule)


@dataclass
class FrameSet:
    """``tensors[m]``: (N, C, H, W) float32 per modality; ``positions`` (N, 3); ``yaw`` (N,); ``stamps_ns`` (N,);
    ``bag`` (N,) index into ``bag_names``; ``group`` (N,) place-group index into ``group_names``."""

    tensors: dict[Modality, np.ndarray]
    positions: np.ndarray
    yaw: np.ndarray
    stamps_ns: np.ndarray
    bag: np.ndarray
    group: np.ndarray
    bag_names: list[str]
    group_names: list[str]

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def subset(self, idx: np.ndarray) -> "FrameSet":
        return FrameSet(
            {m: t[idx] for m, t in self.tensors.items()},
            self.positions[idx],
            self.yaw[idx],
            self.stamps_ns[idx],
            self.bag[idx],
            self.group[idx],
            self.bag_names,
            self.group_names,
        )

    @staticmethod
    def concat(parts: Sequence["FrameSet"]) -> "FrameSet":
        """One frame set from several. Tensors are copied part by part into one preallocated array per modality, so
        parts whose ``tensors`` load lazily (cached bags) never all sit in memory at once next to the result."""
        bag_names: list[str] = []
        group_names: list[str] = []
        bags, groups = [], []
        for p in parts:
            bag_map = []
            for name in p.bag_names:
                if name not in bag_names:
                    bag_names.append(name)
                bag_map.append(bag_names.index(name))
            group_map = []
            for name in p.group_names:
                if name not in group_names:
                    group_names.append(name)
                group_map.append(group_names.index(name))
            bags.append(np.asarray(bag_map, np.int64)[p.bag] if len(p) else np.zeros(0, np.int64))
            groups.append(np.asarray(group_map, np.int64)[p.group] if len(p) else np.zeros(0, np.int64))
        total = sum(len(p) for p in parts)
        for p in parts:
            if set(p.tensors) != set(parts[0].tensors):
                raise BagError(p.bag_names[0] if p.bag_names else "frames",
                               f"has {sorted(m.value for m in p.tensors)}, other bags "
                               f"{sorted(m.value for m in parts[0].tensors)}: choose common ones with --modalities")
        tensors: dict[Modality, np.ndarray] = {}
        for m in parts[0].tensors:
            out: np.ndarray | None = None
            offset = 0
            for p in parts:
                t = p.tensors[m]
                if out is None:
                    out = np.empty((total, *t.shape[1:]), dtype=t.dtype)
                if t.shape[1:] != out.shape[1:] or t.dtype != out.dtype:
                    raise BagError(
                        p.bag_names[0] if p.bag_names else "frames",
                        f"{Modality(m).value} tensors are {t.dtype} {t.shape[1:]}, other bags gave "
                        f"{out.dtype} {out.shape[1:]} (different preprocessing)",
                    )
                out[offset : offset + len(p)] = t
                offset += len(p)
                del t
            tensors[m] = out  # type: ignore[assignment]
        return FrameSet(
            tensors,
            np.concatenate([p.positions for p in parts]),
            np.concatenate([p.yaw for p in parts]),
            np.concatenate([p.stamps_ns for p in parts]),
            np.concatenate(bags),
            np.concatenate(groups),
            bag_names,
            group_names,
        )


class _CachedTensors(Mapping):
    """The per-modality tensors of one cached bag, read from its ``.npz`` only when asked for (and not kept)."""

    def __init__(self, path: Path, modalities: Sequence[Modality] = MODALITIES) -> None:
        self.path = path
        self.modalities = tuple(modalities)

    def __getitem__(self, m: Modality) -> np.ndarray:
        with np.load(self.path, allow_pickle=False) as z:
            return z[Modality(m).value]

    def __iter__(self) -> Iterator[Modality]:
        return iter(self.modalities)

    def __len__(self) -> int:
        return len(self.modalities)


def _read_cache(path: Path) -> FrameSet:
    with np.load(path, allow_pickle=False) as z:
        return FrameSet(
            _CachedTensors(path, [m for m in MODALITIES if m.value in z.files]),  # type: ignore[arg-type]
            z["positions"],
            z["yaw"],
            z["stamps_ns"],
            z["bag"],
            z["group"],
            [str(x) for x in z["bag_names"]],
            [str(x) for x in z["group_names"]],
        )


def nearest_stamps(sorted_stamps: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """For each of ``stamps``, the index of the nearest of ``sorted_stamps`` (ascending, not empty; ties: the
    earlier)."""
    if len(sorted_stamps) == 1:
        return np.zeros(len(stamps), np.int64)
    j = np.clip(np.searchsorted(sorted_stamps, stamps), 1, len(sorted_stamps) - 1)
    left_closer = np.abs(stamps - sorted_stamps[j - 1]) <= np.abs(sorted_stamps[j] - stamps)
    return np.where(left_closer, j - 1, j)


def frames_from_bag(
    path: str | Path,
    preprocessing: dict[Modality, Preprocessing],
    topics: BagTopics | None = None,
    *,
    sync_tolerance_ns: int = 60_000_000,
    group: str | None = None,
    progress: Callable[[int], None] | None = None,
    modalities: Sequence[Modality] = MODALITIES,
    dropped: dict[str, int] | None = None,
    rig: RigOptions | None = None,
    rejected: dict[str, int] | None = None,
) -> FrameSet:
    """Read one bag into synchronised frames of ``modalities`` (one per anchor sample that has a sample of each other
    modality within ``sync_tolerance_ns``; the anchor is the LiDAR scan, or the camera image in a bag without
    LiDAR). ``progress(n)`` is called after each decoded sample; samples without a pose are counted per modality in
    ``dropped``. With ``rig``, each sensor's data is first brought to the canonical rig with the bag's mounts and
    camera intrinsics (``core.rig``). With ``rejected``, messages the decoder rejects (an empty point cloud, ...) are
    skipped and counted there per topic (``bag.reader.count_rejected``); without it they raise."""
    path = Path(path)
    mods = tuple(m for m in MODALITIES if m in set(modalities))
    anchor = Modality.LIDAR if Modality.LIDAR in mods else mods[0]
    per: dict[Modality, tuple[list[int], list[np.ndarray]]] = {m: ([], []) for m in mods}
    lidar_pose: list[tuple[float, float, float, float]] = []
    adapters = {}
    if rig is not None and rig.enabled:
        from cmr_fusion_ros.bag.rig_info import read_rig

        adapters = rig_adapters(rig.sensor_rig(read_rig(path, topics)), mods, rig)
    routes = {m: FrameEmbedder(preprocessing[m], adapter=adapters.get(m)) for m in mods}  # the runtime's route
    camera = routes[Modality.CAMERA].decode_size if Modality.CAMERA in routes else None
    on_bad = count_rejected(rejected) if rejected is not None else None
    for s in read_samples(path, topics, mods, dropped=dropped, camera_size=camera, on_bad=on_bad):
        stamps, tens = per[s.modality]
        stamps.append(s.stamp_ns)
        tens.append(routes[s.modality].tensors(s, s.pose)[0])
        if s.modality is anchor:
            p = s.pose
            lidar_pose.append((p.x, p.y, p.z, p.yaw))
        if progress is not None:
            progress(1)
    for m in mods:
        if not per[m][0]:
            raise BagError(str(path), f"no {m.value} samples with a pose")
    lid_t = np.asarray(per[anchor][0], np.int64)
    keep = np.ones(len(lid_t), bool)
    match: dict[Modality, np.ndarray] = {}
    for m in (x for x in mods if x is not anchor):
        t = np.asarray(per[m][0], np.int64)
        order = np.argsort(t, kind="stable")
        ts = t[order]
        j = nearest_stamps(ts, lid_t)
        keep &= np.abs(ts[j] - lid_t) <= sync_tolerance_ns
        match[m] = order[j]
    idx = np.nonzero(keep)[0]
    poses = np.asarray(lidar_pose, np.float64).reshape(-1, 4)[idx]
    if not len(idx):
        others = " and ".join(f"a {m.value} sample" for m in mods if m is not anchor)
        raise BagError(str(path), f"no {anchor.value} sample has {others} within {sync_tolerance_ns} ns")
    tensors = {m: np.stack([per[m][1][i if m is anchor else match[m][i]] for i in idx]) for m in mods}
    n = len(idx)
    return FrameSet(
        tensors=tensors,  # type: ignore[arg-type]
        positions=poses[:, :3].copy(),
        yaw=poses[:, 3].copy(),
        stamps_ns=lid_t[idx],
        bag=np.zeros(n, np.int64),
        group=np.zeros(n, np.int64),
        bag_names=[str(path)],
        group_names=[group if group is not None else str(path.resolve().parent)],
    )


def _cache_key(path: Path, preprocessing: dict[Modality, Preprocessing], topics: BagTopics, tol: int,
               modalities: Sequence[Modality] = MODALITIES, rig: RigOptions | None = None) -> str:
    stat_parts = []
    for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if f.is_file():
            st = f.stat()
            stat_parts.append((f.name, st.st_size, int(st.st_mtime)))
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "pre": {m.value: preprocessing[m].to_dict() for m in modalities},
            "topics": repr(topics),
            "tol": tol,
            "files": stat_parts,
            **({"modalities": [m.value for m in modalities]} if tuple(modalities) != MODALITIES else {}),
            **({"rig": rig.to_dict()} if rig is not None and rig.enabled else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_frames(
    bags: Sequence[str | Path],
    preprocessing: dict[Modality, Preprocessing],
    topics: BagTopics | None = None,
    *,
    cache_dir: str | Path | None = None,
    sync_tolerance_ns: int = 60_000_000,
    progress: Callable[[int], None] | None = None,
    modalities: Sequence[Modality] = MODALITIES,
    dropped: dict[str, int] | None = None,
    rig: RigOptions | None = None,
    rejected: dict[str, int] | None = None,
) -> FrameSet:
    """Frames of ``modalities`` from several bags, using (and filling) an ``.npz`` cache per bag in ``cache_dir``;
    ``rig``, ``rejected``: see :func:`frames_from_bag` (a cached bag counts nothing again)."""
    topics = topics or BagTopics()
    modalities = tuple(m for m in MODALITIES if m in set(modalities))
    parts = []
    for bag in bags:
        bag = Path(bag)
        cache = None
        if cache_dir is not None:
            key = _cache_key(bag, preprocessing, topics, sync_tolerance_ns, modalities, rig)
            cache = Path(cache_dir) / f"{bag.resolve().parent.name}_{bag.name}_{key}.npz"
        if cache is not None and cache.is_file():
            parts.append(_read_cache(cache))
            continue
        fs = frames_from_bag(bag, preprocessing, topics, sync_tolerance_ns=sync_tolerance_ns, progress=progress,
                             modalities=modalities, dropped=dropped, rig=rig,
                             rejected=rejected)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                **{m.value: fs.tensors[m] for m in modalities},
                positions=fs.positions,
                yaw=fs.yaw,
                stamps_ns=fs.stamps_ns,
                bag=fs.bag,
                group=fs.group,
                bag_names=np.asarray(fs.bag_names),
                group_names=np.asarray(fs.group_names),
            )
            tmp.replace(cache)
            fs = _read_cache(cache)  # its tensors load again only while they are copied into the result
        parts.append(fs)
    if not parts:
        raise BagError("--bags", "no bags given")
    return FrameSet.concat(parts)
