"""`cmr-fusion doctor`: a bag's inputs and embeddings against what the shipped encoders were trained on.

:func:`inspect_bag` reads up to ``max_frames`` frames per modality (evenly spread over the bag), measures each with
:func:`cmr_fusion_ros.core.domain.frame_stats` (camera field of view from the ``camera_info`` topic beside the image
topic), embeds them with the encoders and computes the embedding spread (mean cosine between different frames).
:func:`diagnose` compares that with the ranges in the model cards (``input_ranges``) and gives a verdict and the
next step. :func:`derive_card_ranges` measures training bags and writes their ranges into the cards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.bag.inventory import MODALITIES, bag_modalities
from cmr_fusion_ros.bag.reader import BagTopics, read_samples
from cmr_fusion_ros.core.domain import (
    ModalityVerdict,
    check_modality,
    derive_ranges,
    frame_stats,
    hfov_from_camera_info,
    mean_pairwise_cosine,
    medians,
    ranges_from_cards,
)
from cmr_fusion_ros.core.embed import FrameEmbedder
from cmr_fusion_ros.core.encoder import OnnxEncoder, card_path
from cmr_fusion_ros.core.errors import BagError, ModelError
from cmr_fusion_ros.core.types import Modality

__all__ = ["BagInspection", "DoctorReport", "derive_card_ranges", "diagnose", "inspect_bag"]


@dataclass
class BagInspection:
    path: str
    stats: dict[Modality, list[dict[str, float]]]
    embeddings: dict[Modality, np.ndarray]
    counts: dict[Modality, int]  # messages of each modality in the bag
    has_odometry: bool
    camera_info: bool
    positions: dict[Modality, list[tuple[float, float] | None]] = field(default_factory=dict)

    def mean_cosine(self, m: Modality) -> float | None:
        """Spread of a modality's embeddings: between frames more than 20 m apart when every frame has a pose,
        else between all frames; None for fewer than 2 frames (or no pair far enough apart)."""
        e = self.embeddings.get(m)
        if e is None or len(e) < 2:
            return None
        pos = self.positions.get(m) or []
        known = len(pos) == len(e) and all(p is not None for p in pos)
        v = mean_pairwise_cosine(e, np.asarray(pos) if known else None)
        return v if math.isfinite(v) else None


def _camera_hfov(path: Path, image_topic: str) -> tuple[float | None, bool]:
    """hfov (degrees) from the first CameraInfo beside ``image_topic`` (``.../image[/compressed]`` ->
    ``.../camera_info``), and whether there was one."""
    from rosbags.highlevel import AnyReader

    base = image_topic.removesuffix("/compressed").removesuffix("/image")
    with AnyReader([path]) as reader:
        conns = [c for c in reader.connections if c.topic == f"{base}/camera_info"
                 and c.msgtype == "sensor_msgs/msg/CameraInfo"]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            return hfov_from_camera_info(int(msg.width), float(msg.k[0])), True
    return None, False


def inspect_bag(path: str | Path, encoders: Mapping[Modality, OnnxEncoder], topics: BagTopics | None = None, *,
                modalities: Sequence[Modality] | None = None, max_frames: int = 200,
                progress: Callable[[int], None] | None = None) -> BagInspection:
    """Statistics and embeddings of up to ``max_frames`` frames per modality, spread evenly over the bag."""
    from rosbags.highlevel import AnyReader

    p = Path(path)
    topics = topics or BagTopics()
    present = bag_modalities(p, topics)
    mods = [m for m in MODALITIES if m in present and (modalities is None or m in modalities) and m in encoders]
    if not mods:
        raise BagError(str(p), "none of camera, lidar, radar is in the bag (check the --*-topic options)")
    with AnyReader([p]) as reader:
        counts_by_topic = {c.topic: c.msgcount for c in reader.connections}
        has_odom = any(c.topic == topics.odom for c in reader.connections)
    counts = {m: counts_by_topic.get(present[m], 0) for m in mods}
    stride = {m: max(1, math.ceil(counts[m] / max_frames)) for m in mods}
    hfov, info = (None, False)
    if Modality.CAMERA in mods:
        hfov, info = _camera_hfov(p, present[Modality.CAMERA])
    seen = {m: 0 for m in mods}
    positions: dict[Modality, list[tuple[float, float] | None]] = {m: [] for m in mods}
    stats: dict[Modality, list[dict[str, float]]] = {m: [] for m in mods}
    tensors: dict[Modality, list[np.ndarray]] = {m: [] for m in mods}
    routes = {m: FrameEmbedder.of(encoders[m]) for m in mods}  # the runtime's merge -> preprocess -> encode
    # images decoded at full size (no camera_size): the statistics are of the sensor's images
    for s in read_samples(p, topics, mods, require_pose=False):
        m = s.modality
        i = seen[m]
        seen[m] += 1
        if i % stride[m]:
            routes[m].merge(s, s.pose)  # a multi-scan model still merges every scan, in order
            continue
        stats[m].append(frame_stats(m, s.data, hfov_deg=hfov if m is Modality.CAMERA else None))
        tensors[m].append(routes[m].tensors(s, s.pose)[0])
        positions[m].append(None if s.pose is None else (s.pose.x, s.pose.y))
        if progress is not None:
            progress(1)
    embeddings = {m: routes[m].encode(np.stack(t)) for m, t in tensors.items() if t}
    return BagInspection(str(p), stats, embeddings, counts, has_odom, info, positions)


@dataclass
class DoctorReport:
    bag: str
    verdicts: dict[Modality, ModalityVerdict]
    has_odometry: bool
    models: str
    no_ranges: list[str] = field(default_factory=list)

    @property
    def in_domain(self) -> bool:
        return all(v.in_domain for v in self.verdicts.values())

    def next_step(self) -> str:
        if self.in_domain:
            return ("the shipped encoders should work on this data: process it (`cmr-fusion process BAG --out OUT`) "
                    "and, with odometry, measure with `cmr-fusion eval` / `cmr-fusion eval-events`")
        out = [m.value for m, v in self.verdicts.items() if not v.in_domain]
        step = (f"fine-tune the {', '.join(out)} encoder(s) on your own recordings: `cmr-fusion train --init "
                f"{self.models} --bags YOUR_BAGS --val-bags DB_BAG QUERY_BAG` on sessions with odometry that "
                "revisit their places (the shipped models: simulated towns of 3 sessions, the default and drawn sensor "
                "rigs, models/README.md), then "
                "`cmr-fusion export` and `cmr-fusion eval` on held-out sessions")
        if not self.has_odometry:
            step = "record a nav_msgs/Odometry topic (training and evaluation need poses), then " + step
        return step

    def lines(self) -> list[str]:
        lines = [f"bag: {self.bag}", f"models: {self.models}"]
        for m, v in self.verdicts.items():
            known = v.mean_cosine is not None and math.isfinite(v.mean_cosine)
            ref = f" (training data {v.training_mean_cosine:.2f})" if v.training_mean_cosine is not None else ""
            mc = f"{v.mean_cosine:.2f}{ref}" if known else "n/a (fewer than 2 frames, or none 20 m apart)"
            head = "in domain" if v.in_domain else "OUT OF DOMAIN"
            lines.append(f"{m.value}: {head} ({v.frames} frames inspected)")
            lines.append("  " + ", ".join(f"{k} {val:.4g}" for k, val in v.medians.items()))
            lines.append(f"  embedding spread: mean cosine between frames {mc}")
            for r in v.reasons():
                lines.append(f"  - {r}")
            if v.unchecked:
                lines.append(f"  not checked (no value or no training range): {', '.join(v.unchecked)}")
        if self.no_ranges:
            lines.append(f"no training ranges in the cards of: {', '.join(self.no_ranges)} (only the spread checked)")
        lines.append(f"verdict: {'IN DOMAIN' if self.in_domain else 'OUT OF DOMAIN'}")
        lines.append(f"next step: {self.next_step()}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"bag": self.bag, "models": self.models, "in_domain": self.in_domain, "has_odometry": self.has_odometry,
                "modalities": {m.value: v.to_dict() for m, v in self.verdicts.items()}, "next_step": self.next_step()}


def diagnose(inspection: BagInspection, encoders: Mapping[Modality, OnnxEncoder], models: str) -> DoctorReport:
    ranges = ranges_from_cards(encoders)
    verdicts = {m: check_modality(m, st, ranges.get(m), inspection.mean_cosine(m))
                for m, st in inspection.stats.items() if st}
    return DoctorReport(inspection.path, verdicts, inspection.has_odometry, models,
                        [m.value for m in verdicts if m not in ranges])


def derive_card_ranges(bags: Sequence[str | Path], encoders: Mapping[Modality, OnnxEncoder], models_dir: str | Path,
                       topics: BagTopics | None = None, *, source: str = "", max_frames: int = 200) -> dict:
    """Measure training bags, derive each modality's :class:`InputRanges` and write them into the cards (JSON) in
    ``models_dir``. The spread kept is the largest mean cosine of the bags."""
    per_bag: dict[Modality, list[dict[str, float]]] = {m: [] for m in encoders}
    cosines: dict[Modality, list[float]] = {m: [] for m in encoders}
    for bag in bags:
        ins = inspect_bag(bag, encoders, topics, max_frames=max_frames)
        for m, st in ins.stats.items():
            if st:
                per_bag[m].append(medians(st))
            mc = ins.mean_cosine(m)
            if mc is not None:
                cosines[m].append(mc)
    written = {}
    for m, enc in encoders.items():
        if not per_bag[m]:
            continue
        r = derive_ranges(m, per_bag[m], max(cosines[m]) if cosines[m] else None, source)
        cp = card_path(enc.config.model_path)
        try:
            data = json.loads(cp.read_text())
        except (OSError, ValueError) as err:
            raise ModelError(str(cp), f"unreadable card: {err}") from err
        data["input_ranges"] = r.to_dict()
        cp.write_text(json.dumps(data, indent=2) + "\n")
        written[m.value] = r.to_dict()
    return written
