"""Contrastive training of the three encoders into one space.

Loss: symmetric multi-positive InfoNCE over every modality pair (camera-camera, lidar-lidar, radar-radar,
camera-lidar, camera-radar, lidar-radar). Two frames are positives when they are in the same place group and within
``pos_radius_m`` of each other (any time, any session); negatives are farther than ``neg_radius_m``; pairs in between
are left out of the loss. ``pos_max_yaw_deg`` (below 180) also asks the positives of every pair with a camera or
radar in it to face within that many degrees of each other: those sensors look forward, so two frames at one spot
facing opposite ways (the same road driven back, a right-angle crossing) show different scenes and would teach the
encoder to memorise the town; such close but turned pairs are left out of those pairs' loss. LiDAR-LiDAR pairs keep
every heading (the scan is 360 degrees). For the same modality a frame is never its own positive. Each batch is
built from anchors, one positive per anchor from another time or session when there is one (within the heading
limit), and one hard negative per anchor from a nearby place (between ``neg_radius_m`` and ``hard_max_m``).

Everything is seeded: numpy, torch, the batch sampler. Validation recall (per validation place: database = its first
bag, queries = its second; averaged over the places) is computed after every epoch; the best epoch's weights are kept.

Some encoders can be *frozen* (``TrainConfig.frozen``): they keep their (initial) weights and batch-norm statistics,
are run without gradients, and only the pairs with at least one trainable modality enter the loss. That trains one
encoder into the space of the others, e.g. a new radar encoder against the shipped camera and LiDAR encoders.

*Anchored* frames (``Trainer.fit(anchor=...)`` with teachers set by :meth:`Trainer.set_teachers` and
``TrainConfig.anchor_weight`` > 0) add a distillation term: ``anchor_weight`` x the mean of ``1 - cos(student,
teacher)`` over the anchored frames of each batch and each trained encoder, the teacher being a frozen copy of
earlier encoders (e.g. the shipped ones) run on the same augmented input. Fine-tuning for a new sensor rig with the
old rig's bags anchored holds the old rig's embeddings near where they were (contrastive fine-tuning on the new rig
alone moves the whole space and the old rig loses recall: models/README.md, README "Training the encoders on your own
bags"), and the new rig's frames are pulled into that same space by the cross-modal and same-place terms.

*Paired* frames (``Trainer.fit(paired=...)``, built by :func:`paired_targets`, ``TrainConfig.pair_weight`` > 0) add
a second distillation term: the frame of a new rig is pulled towards a frozen encoder's embedding of another rig's
frame of the same moment (a reference rig recorded beside it: two sensor sets on one vehicle, or the simulator's
same seed with another rig: same world, route and stamps). Anchoring holds a rig where it was; pairing moves the new
rig to where the reference rig's frames of the same places already are. The targets are computed once, before
training, on the clean reference frames (and on their mirror images, used when a batch is mirrored).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.recall import recall_at_k
from cmr_fusion_ros.training.dataset import MODALITIES, FrameSet, nearest_stamps
from cmr_fusion_ros.training.models import ConvEncoder, build_encoder

__all__ = [
    "TrainConfig",
    "Trainer",
    "PairTargets",
    "embed_array",
    "embed_frames",
    "info_nce_multi",
    "pair_masks",
    "paired_targets",
    "sample_batch",
    "validate",
    "validate_places",
]

PAIRS = [(a, b) for i, a in enumerate(MODALITIES) for b in MODALITIES[i:]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_anchors: int = 32  # frames per batch = 3 x anchors (anchor, positive, hard negative)
    steps_per_epoch: int = 0  # 0: ceil(train frames / anchors)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    pos_radius_m: float = 5.0
    pos_max_yaw_deg: float = 60.0  # positives of pairs with a camera or radar: headings within this (180: any)
    neg_radius_m: float = 12.0
    hard_max_m: float = 40.0
    min_time_apart_s: float = 10.0  # a positive from the same bag must be this far apart in time (a revisit)
    embedding_dim: int = 256
    seed: int = 0
    threads: int = 1
    flip_p: float = 0.5  # mirror a whole batch left-right (each preprocessing's mirror_segments) with this probability
    color_jitter: float = 0.4
    dropout: float = 0.1
    shift_px: int = 0  # random per-sample translation of every input by up to this many pixels (zero padded)
    cutout_p: float = 0.0  # probability of blanking a random rectangle (up to a quarter of each side) per input
    frozen: tuple[Modality, ...] = ()  # encoders kept as initialised (no gradient, batch-norm statistics fixed)
    anchor_weight: float = 0.0  # weight of the distillation term on anchored frames (0: none)
    pair_weight: float = 0.0  # weight of the distillation term towards paired reference frames (0: none)

    def __post_init__(self) -> None:
        def need(key: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"train.{key}", getattr(self, key), allowed)

        for key in ("epochs", "batch_anchors", "embedding_dim", "threads"):
            v = getattr(self, key)
            need(key, isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1")
        need("steps_per_epoch", isinstance(self.steps_per_epoch, int) and self.steps_per_epoch >= 0, "an integer >= 0")
        for key in ("lr", "temperature", "pos_radius_m", "neg_radius_m", "hard_max_m"):
            v = getattr(self, key)
            need(key, isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "a number > 0")
        v = self.pos_max_yaw_deg
        need("pos_max_yaw_deg", isinstance(v, (int, float)) and 0 < v <= 180, "a number in (0, 180]")
        need("neg_radius_m", self.neg_radius_m >= self.pos_radius_m, f">= pos_radius_m ({self.pos_radius_m})")
        need("hard_max_m", self.hard_max_m > self.neg_radius_m, f"> neg_radius_m ({self.neg_radius_m})")
        for key in ("weight_decay", "min_time_apart_s", "color_jitter", "anchor_weight", "pair_weight"):
            v = getattr(self, key)
            need(key, isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "a number >= 0")
        need("shift_px", isinstance(self.shift_px, int) and 0 <= self.shift_px <= 16, "an integer in 0..16")
        for key in ("flip_p", "dropout", "cutout_p"):
            v = getattr(self, key)
            need(key, isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)")
        need("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0")
        try:
            frozen = tuple(dict.fromkeys(Modality(m) for m in self.frozen))
        except (ValueError, TypeError):
            frozen = None
        need("frozen", frozen is not None, f"modalities among {[m.value for m in MODALITIES]}")
        need("frozen", frozen is not None and len(frozen) < len(MODALITIES), "at most two of the three modalities")
        object.__setattr__(self, "frozen", frozen)


def heading_diff_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute difference of yaw angles (radians, broadcast) in degrees, 0..180."""
    return np.degrees(np.abs((a - b + np.pi) % (2 * np.pi) - np.pi))


def pair_masks(
    pos: np.ndarray,
    group: np.ndarray,
    pos_r: float,
    neg_r: float,
    same_modality: bool,
    yaw: np.ndarray | None = None,
    max_yaw_deg: float = 180.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(positive, valid) boolean matrices for a batch; valid = positive or a true negative. With ``yaw`` and
    ``max_yaw_deg`` below 180, a positive must also face within ``max_yaw_deg`` (close pairs turned further are
    neither positive nor valid)."""
    d = np.linalg.norm(pos[:, None, :2] - pos[None, :, :2], axis=-1)
    same = group[:, None] == group[None, :]
    positive = same & (d <= pos_r)
    if yaw is not None and max_yaw_deg < 180.0:
        positive &= heading_diff_deg(yaw[:, None], yaw[None, :]) <= max_yaw_deg
    valid = positive | ~same | (d > neg_r)
    if same_modality:
        np.fill_diagonal(positive, False)
        np.fill_diagonal(valid, False)
    return positive, valid


def info_nce_multi(logits: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over rows that have a positive of ``-log(sum_pos exp / sum_valid exp)``."""
    neg_inf = torch.finfo(logits.dtype).min
    has = positive.any(dim=1)
    if not bool(has.any()):
        return logits.sum() * 0.0
    lg = logits[has]
    num = torch.logsumexp(lg.masked_fill(~positive[has], neg_inf), dim=1)
    den = torch.logsumexp(lg.masked_fill(~valid[has], neg_inf), dim=1)
    return (den - num).mean()


class _Index:
    """Neighbour lookups per place group for the batch sampler."""

    def __init__(self, frames: FrameSet, cfg: TrainConfig) -> None:
        self.frames = frames
        self.cfg = cfg
        self.by_group = {g: np.nonzero(frames.group == g)[0] for g in np.unique(frames.group)}

    def partners(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        f, cfg = self.frames, self.cfg
        cand = self.by_group[int(f.group[i])]
        d = np.linalg.norm(f.positions[cand, :2] - f.positions[i, :2], axis=1)
        other_time = (f.bag[cand] != f.bag[i]) | (
            np.abs(f.stamps_ns[cand] - f.stamps_ns[i]) > int(cfg.min_time_apart_s * 1e9)
        )
        close = (d <= cfg.pos_radius_m) & other_time
        if cfg.pos_max_yaw_deg < 180.0:  # a positive every pair can use
            close &= heading_diff_deg(f.yaw[cand], f.yaw[i]) <= cfg.pos_max_yaw_deg
        pos = cand[close]
        hard = cand[(d > cfg.neg_radius_m) & (d <= cfg.hard_max_m)]
        return pos, hard


def sample_batch(index: _Index, rng: np.random.Generator, anchors: int) -> np.ndarray:
    n = len(index.frames)
    picks = rng.choice(n, size=min(anchors, n), replace=False)
    out = list(picks)
    for i in picks:
        pos, hard = index.partners(int(i))
        if len(pos):
            out.append(int(rng.choice(pos)))
        if len(hard):
            out.append(int(rng.choice(hard)))
    return np.asarray(out, np.int64)


Segments = tuple[tuple[int, int], ...]


def mirror_batch(x: torch.Tensor, segments: Segments) -> torch.Tensor:
    """``x`` (N, C, H, W) as the mirrored world would give it: each column range of ``segments`` reversed
    (``core.preprocess.mirror``; a LiDAR bird's-eye view and front view side by side are each mirrored in place)."""
    out = x.clone()
    for a, b in segments:
        out[..., a:b] = torch.flip(x[..., a:b], dims=[3])
    return out


def _augment(batch: dict[Modality, torch.Tensor], cfg: TrainConfig, rng: np.random.Generator,
             mirror: Mapping[Modality, Segments]) -> bool:
    """Augment ``batch`` in place; returns whether the batch was mirrored."""
    flipped = bool(cfg.flip_p and rng.random() < cfg.flip_p)
    if flipped:
        for m in batch:
            batch[m] = mirror_batch(batch[m], mirror[m])
    if cfg.color_jitter and Modality.CAMERA in batch:
        cam = batch[Modality.CAMERA]
        n = cam.shape[0]
        gain = torch.from_numpy(rng.uniform(1 - cfg.color_jitter, 1 + cfg.color_jitter, (n, 3, 1, 1)).astype(np.float32))
        shift = torch.from_numpy(rng.uniform(-cfg.color_jitter, cfg.color_jitter, (n, 1, 1, 1)).astype(np.float32))
        batch[Modality.CAMERA] = cam * gain + shift
    if cfg.shift_px or cfg.cutout_p:
        for m, x in batch.items():
            n, _, h, w = x.shape
            s = cfg.shift_px
            padded = F.pad(x, (s, s, s, s)) if s else x
            out = torch.empty_like(x)
            for i in range(n):
                dy, dx = (int(v) for v in rng.integers(0, 2 * s + 1, 2)) if s else (0, 0)
                out[i] = padded[i, :, dy : dy + h, dx : dx + w]
                if cfg.cutout_p and rng.random() < cfg.cutout_p:
                    ch, cw = int(rng.integers(1, h // 4 + 2)), int(rng.integers(1, w // 4 + 2))
                    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                    out[i, :, y0 : y0 + ch, x0 : x0 + cw] = 0.0
            batch[m] = out
    return flipped


def embed_array(model: ConvEncoder, tensors: np.ndarray, batch: int = 128,
                mirror: Segments | None = None) -> np.ndarray:
    """``model`` (in eval mode) on ``tensors`` (N, C, H, W) in batches, each mirrored first when ``mirror`` is given
    (its segments); (N, dim) unit vectors."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(tensors), batch):
            x = torch.from_numpy(np.ascontiguousarray(tensors[s : s + batch]))
            out.append(model(x if mirror is None else mirror_batch(x, mirror)).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dim), np.float32)


def embed_frames(models: dict[Modality, ConvEncoder], frames: FrameSet, batch: int = 128) -> dict[Modality, np.ndarray]:
    # each modality's tensors taken once (a cached bag's array is read from its file at each access)
    return {m: embed_array(model, frames.tensors[m], batch) for m, model in models.items() if m in frames.tensors}


@dataclass
class PairTargets:
    """Distillation targets of paired training frames: ``row`` (N,) per training frame, the row of its target in
    ``plain[m]`` / ``mirrored[m]`` ((K, dim) unit vectors per modality), -1 for a frame without a reference frame."""

    row: np.ndarray
    plain: dict[Modality, np.ndarray]
    mirrored: dict[Modality, np.ndarray]

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.row >= 0))


def paired_targets(
    teachers: Mapping[Modality, ConvEncoder],
    train: FrameSet,
    references: Sequence[tuple[int, FrameSet]],
    mirror: Mapping[Modality, Segments],
    tolerance_ns: int = 50_000_000,
) -> PairTargets:
    """Targets for the frames of training bag ``i`` (``train.bag == i``) from the reference frames of the same
    moment (nearest stamp within ``tolerance_ns``), one ``(i, reference frames)`` per paired bag: each teacher's
    embedding of the reference frame, plain and mirrored (``mirror``: each modality's mirror segments). Frames with
    no reference within the tolerance keep row -1."""
    row = np.full(len(train), -1, np.int64)
    plain: dict[Modality, list[np.ndarray]] = {m: [] for m in teachers}
    mirrored: dict[Modality, list[np.ndarray]] = {m: [] for m in teachers}
    k = 0
    for bag_index, ref in references:
        mine = np.nonzero(train.bag == bag_index)[0]
        if not len(mine) or not len(ref):
            continue
        order = np.argsort(ref.stamps_ns, kind="stable")
        ts = ref.stamps_ns[order]
        t = train.stamps_ns[mine]
        j = nearest_stamps(ts, t)
        ok = np.abs(ts[j] - t) <= tolerance_ns
        if not ok.any():
            continue
        pick = order[j[ok]]
        for m, model in teachers.items():
            if m not in ref.tensors:
                raise ConfigError("train.pairs", f"reference {ref.bag_names[0]}", f"frames with {m.value}")
            tensors = ref.tensors[m][pick]  # one load of a cached bag's array
            plain[m].append(embed_array(model, tensors, 256))
            mirrored[m].append(embed_array(model, tensors, 256, mirror[m]))
        row[mine[ok]] = np.arange(k, k + len(pick))
        k += len(pick)
    dims = {m: model.dim for m, model in teachers.items()}
    return PairTargets(
        row,
        {m: np.concatenate(v) if v else np.zeros((0, dims[m]), np.float32) for m, v in plain.items()},
        {m: np.concatenate(v) if v else np.zeros((0, dims[m]), np.float32) for m, v in mirrored.items()},
    )


def validate(
    models: dict[Modality, ConvEncoder], database: FrameSet, queries: FrameSet, radius: float = 10.0
) -> dict[str, float]:
    """recall@1 for every query modality -> database modality pair the frames hold (keys like ``camera->lidar``)."""
    db = embed_frames(models, database)
    q = embed_frames(models, queries)
    out = {}
    for qm in (m for m in MODALITIES if m in q):
        for dm in (m for m in MODALITIES if m in db):
            r = recall_at_k(q[qm], db[dm], queries.positions, database.positions, radius, ks=(1,))
            out[f"{qm.value}->{dm.value}"] = r.recalls[1]
    return out


def validate_places(
    models: dict[Modality, ConvEncoder], places: Sequence[tuple[FrameSet, FrameSet]], radius: float = 10.0
) -> dict[str, float]:
    """:func:`validate` for several (database, queries) places, recall@1 per pair averaged over the places (one
    small town gives +-0.05 between epochs; several make the best-epoch choice meaningful)."""
    per = [validate(models, db, q, radius) for db, q in places]
    return {k: float(np.mean([p[k] for p in per])) for k in per[0]} if per else {}


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        input_shapes: dict[Modality, tuple[int, int, int]],
        widths: Mapping[Modality, tuple[int, ...]] | None = None,
        mirror: Mapping[Modality, Segments] | None = None,
        modalities: Sequence[Modality] = MODALITIES,
    ) -> None:
        """``widths``: channel widths per modality (default :class:`ConvEncoder`'s); ``mirror``: each modality's
        ``mirror_segments`` (its preprocessing's; default: the whole width, one image); frozen encoders must be loaded
        with their weights (:meth:`load`) before :meth:`fit`. ``modalities``: those the training frames hold (two or
        more); an encoder of another modality is not trained (it keeps its loaded weights)."""
        self.cfg = cfg
        self.mirror = {m: tuple(mirror[m]) if mirror and m in mirror else ((0, input_shapes[m][2]),)
                       for m in MODALITIES}
        torch.manual_seed(cfg.seed)
        torch.set_num_threads(cfg.threads)
        widths = dict(widths or {})
        self.models = {
            m: _with_dropout(build_encoder(m, input_shapes[m], cfg.embedding_dim, widths.get(m)), cfg.dropout)
            for m in MODALITIES
        }
        self.modalities = tuple(m for m in MODALITIES if m in set(modalities))
        self.trainable = tuple(m for m in self.modalities if m not in cfg.frozen)
        if not self.trainable:
            raise ConfigError("train.frozen", [m.value for m in cfg.frozen],
                              f"at least one of the trained modalities {[m.value for m in self.modalities]} not frozen")
        self.pairs = [(a, b) for a, b in PAIRS if (a in self.trainable or b in self.trainable)
                      and a in self.modalities and b in self.modalities]
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))
        params = [p for m in self.trainable for p in self.models[m].parameters()] + [self.logit_scale]
        for m in MODALITIES:
            if m not in self.trainable:
                self.models[m].requires_grad_(False)
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.teachers: dict[Modality, ConvEncoder] = {}
        self.last_anchor_loss = 0.0
        self.last_pair_loss = 0.0

    def set_teachers(self, models: Mapping[Modality, ConvEncoder]) -> None:
        """Frozen copies of ``models`` (same architecture and input shape as the trained encoders) become the
        distillation targets of anchored frames; trained modalities without a teacher get no distillation term."""
        for m, model in models.items():
            mine = self.models[m]
            if tuple(model.input_shape) != mine.input_shape or model.dim != mine.dim:
                raise ConfigError(f"train.anchor.{m.value}", f"input {tuple(model.input_shape)}, dim {model.dim}",
                                  f"input {mine.input_shape}, dim {mine.dim} (the encoder being trained)")
            t = copy.deepcopy(model)
            t.requires_grad_(False)
            t.eval()
            self.teachers[m] = t

    def load(self, modality: Modality, model: ConvEncoder) -> None:
        """Start ``modality`` from ``model``'s weights (same architecture and input shape)."""
        mine = self.models[modality]
        if tuple(model.input_shape) != mine.input_shape or tuple(model.widths) != mine.widths or model.dim != mine.dim:
            raise ConfigError(
                f"train.init.{modality.value}", f"input {tuple(model.input_shape)}, widths {tuple(model.widths)}",
                f"input {mine.input_shape}, widths {mine.widths}, dim {mine.dim} (the encoder being trained)",
            )
        mine.load_state_dict(model.state_dict())

    def loss(
        self, batch: dict[Modality, torch.Tensor], pos: np.ndarray, group: np.ndarray, yaw: np.ndarray | None = None,
        anchor: np.ndarray | None = None,
        paired: Mapping[Modality, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> torch.Tensor:
        """Contrastive loss of the batch (mean over the modality pairs), plus ``anchor_weight`` x the mean distillation
        term of the anchored frames (``anchor``: boolean per frame) when teachers are set, plus ``pair_weight`` x the
        mean of 1 - cos(embedding, target) over the paired frames (``paired[m]``: the frames' positions in the batch
        and their (n, dim) targets)."""
        emb = {m: self.models[m](batch[m]) for m in self.trainable}
        with torch.no_grad():
            emb.update({m: self.models[m](batch[m]) for m in self.modalities if m not in self.trainable})
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        total = torch.zeros(())
        cfg = self.cfg
        masks: dict[tuple[bool, float], tuple[torch.Tensor, torch.Tensor]] = {}
        for a, b in self.pairs:
            lidar_only = a is Modality.LIDAR and b is Modality.LIDAR  # 360-degree scans: any heading
            key = (a == b, 180.0 if lidar_only else cfg.pos_max_yaw_deg)
            if key not in masks:
                masks[key] = tuple(torch.from_numpy(m) for m in pair_masks(  # type: ignore[assignment]
                    pos, group, cfg.pos_radius_m, cfg.neg_radius_m, key[0], yaw, key[1]))
            positive, valid = masks[key]
            logits = scale * emb[a] @ emb[b].T
            total = total + 0.5 * (info_nce_multi(logits, positive, valid) + info_nce_multi(logits.T, positive.T, valid.T))
        total = total / len(self.pairs)
        self.last_anchor_loss = 0.0
        distilled = [m for m in self.trainable if m in self.teachers]
        if cfg.anchor_weight > 0 and distilled and anchor is not None and bool(np.any(anchor)):
            sel = torch.from_numpy(np.asarray(anchor, bool))
            terms = []
            for m in distilled:
                with torch.no_grad():
                    target = self.teachers[m](batch[m][sel])
                terms.append((1.0 - (emb[m][sel] * target).sum(dim=1)).mean())
            distill = torch.stack(terms).mean()
            self.last_anchor_loss = float(distill.detach())
            total = total + cfg.anchor_weight * distill
        self.last_pair_loss = 0.0
        terms = []
        for m, (rows, target) in (paired or {}).items():
            if m in self.trainable and len(rows):
                t = torch.from_numpy(np.ascontiguousarray(target, np.float32))
                terms.append((1.0 - (emb[m][torch.from_numpy(rows)] * t).sum(dim=1)).mean())
        if cfg.pair_weight > 0 and terms:
            term = torch.stack(terms).mean()
            self.last_pair_loss = float(term.detach())
            total = total + cfg.pair_weight * term
        return total

    def fit(
        self,
        train: FrameSet,
        val: tuple[FrameSet, FrameSet] | Sequence[tuple[FrameSet, FrameSet]] | None,
        *,
        on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
        progress: Callable[[int, int], Any] | None = None,
        anchor: np.ndarray | None = None,
        paired: PairTargets | None = None,
    ) -> list[dict[str, Any]]:
        """Train; returns the per-epoch history. ``val``: one (database, queries) pair or a list of them (recall
        averaged over them). ``progress(epoch, steps)`` returns an iterable wrapper (tqdm). ``anchor``: boolean per
        training frame, the frames held near the teachers' embeddings (see :meth:`set_teachers`); ``paired``: targets
        of paired frames (:func:`paired_targets`)."""
        cfg = self.cfg
        if anchor is not None:
            anchor = np.asarray(anchor, bool)
            if anchor.shape != (len(train),):
                raise ConfigError("train.anchor", f"shape {anchor.shape}", f"one flag per training frame ({len(train)})")
        if paired is not None and paired.row.shape != (len(train),):
            raise ConfigError("train.pairs", f"shape {paired.row.shape}", f"one row per training frame ({len(train)})")
        places = [] if val is None else [val] if isinstance(val, tuple) and isinstance(val[0], FrameSet) else list(val)
        rng = np.random.default_rng(cfg.seed)
        index = _Index(train, cfg)
        steps = cfg.steps_per_epoch or max(1, math.ceil(len(train) / cfg.batch_anchors))
        total_steps = steps * cfg.epochs
        warm = max(1, total_steps // 20)

        def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor)
        history: list[dict[str, Any]] = []
        best = -1.0
        self.best_state = {m: {k: v.clone() for k, v in mdl.state_dict().items()} for m, mdl in self.models.items()}
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            for m, mdl in self.models.items():
                mdl.train(m in self.trainable)
            losses, anchor_losses, pair_losses = [], [], []
            it = range(steps) if progress is None else progress(epoch, steps)
            for _ in it:
                idx = sample_batch(index, rng, cfg.batch_anchors)
                batch = {m: torch.from_numpy(train.tensors[m][idx]) for m in self.modalities}
                flipped = _augment(batch, cfg, rng, self.mirror)
                pairs = None
                if paired is not None and cfg.pair_weight > 0:
                    rows = paired.row[idx]
                    at = np.nonzero(rows >= 0)[0]
                    targets = paired.mirrored if flipped else paired.plain
                    pairs = {m: (at, t[rows[at]]) for m, t in targets.items()}
                loss = self.loss(batch, train.positions[idx], train.group[idx], train.yaw[idx],
                                 None if anchor is None else anchor[idx], pairs)
                anchor_losses.append(self.last_anchor_loss)
                pair_losses.append(self.last_pair_loss)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if hasattr(it, "set_postfix"):
                    it.set_postfix(loss=f"{losses[-1]:.3f}")
            rec = validate_places(self.models, places)
            score = float(np.mean(list(rec.values()))) if rec else -float(np.mean(losses))
            entry = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "anchor_loss": float(np.mean(anchor_losses)) if self.teachers and cfg.anchor_weight > 0 else None,
                "pair_loss": float(np.mean(pair_losses)) if paired is not None and cfg.pair_weight > 0 else None,
                "temperature": float(1.0 / self.logit_scale.detach().exp()),
                "val_recall@1": rec,
                "val_mean_recall@1": score if rec else None,
                "seconds": time.perf_counter() - t0,
            }
            if score > best:
                best = score
                entry["best"] = True
                self.best_state = {m: {k: v.clone() for k, v in mdl.state_dict().items()} for m, mdl in self.models.items()}
            history.append(entry)
            if on_epoch is not None:
                on_epoch(epoch, entry)
        for m, mdl in self.models.items():
            mdl.load_state_dict(self.best_state[m])
            mdl.eval()
        return history


def _with_dropout(model: ConvEncoder, p: float) -> ConvEncoder:
    model.dropout.p = p
    return model


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")

