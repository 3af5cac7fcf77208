"""Event-level evaluation: precision and recall of published match events against ground-truth revisits.

Inputs: match events (JSONL from ``cmr-fusion process`` or the demo: ``stamp_ns`` = query stamp,
``match_stamp_ns``, ``score``, ``query_modality``, ``match_modality``) and the bags the events came from, whose
odometry is the ground truth. The events' own poses are not trusted: both stamps are looked up in the truth bags'
odometry (interpolated; a stamp no truth bag covers has no ground-truth position).

Definitions (radius ``R``, temporal exclusion ``E`` = the pipeline's ``policy.exclude_recent_s``):

* **true event**: both stamps have a ground-truth position and the two positions are at most ``R`` apart. An event
  with a stamp no truth bag covers is counted as false (``no_truth``), never silently dropped.
* **revisit instant**: a time ``t`` on the truth trajectory, sampled every ``sample_s``, at which the ego is within
  ``R`` of its own position at some earlier time ``t' <= t - E`` (any truth bag, so a later session revisits the
  places of an earlier one: bags are taken in stamp order, as ``process`` sees them when it extends one memory).
* **revisit** (the unit of recall, "a place seen again"): a maximal run of revisit instants of one bag with no gap
  longer than ``gap_s``; its window is ``[first instant - slack_s, last instant + slack_s]``. Runs shorter than
  ``min_revisit_s`` (e.g. crossing an old path at an intersection) are ignored when that option is set. A run
  longer than ``max_window_s`` (default 10 s, the policy's default ``debounce_s``) is cut into equal parts of at most
  that length, each a revisit of its own: a whole lap driven again is many places, not one, and counting it once
  would let a single event score full recall. ``max_window_s = 0`` keeps whole runs (the lenient figure).
* **detected revisit**: a revisit whose window holds the query stamp of at least one true event. One event per
  revisit is enough (the policy's debounce fires once per place, not per frame).
* precision = true events / events; recall = detected revisits / revisits.
* **PR curve**: both figures for the events with ``score >= threshold``, for every distinct score as threshold.
  The curve is computed from the published events, so it covers thresholds at or above the run's
  ``policy.min_score`` only; raising the threshold after the fact is not quite the same as running with it (the
  debounce may have suppressed a later, higher-scoring candidate of the same place): run with a low ``min_score``
  to sweep.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.core.errors import BagError, ConfigError

__all__ = [
    "EventEvaluation",
    "EventRecord",
    "EvalSettings",
    "Revisit",
    "TruthTracks",
    "evaluate_events",
    "find_revisits",
    "load_events",
    "plot_evaluation",
]

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """Parameters of the evaluation (see the module docstring); validated."""

    radius_m: float = 10.0
    exclude_recent_s: float = 30.0
    sample_s: float = 0.2
    gap_s: float = 1.0
    slack_s: float = 1.0
    min_revisit_s: float = 0.0
    max_window_s: float = 10.0
    target_precision: float = 0.95
    target_recall: float = 0.7

    def __post_init__(self) -> None:
        checks = {
            "radius_m": (self.radius_m, 0.0, False), "exclude_recent_s": (self.exclude_recent_s, 0.0, True),
            "sample_s": (self.sample_s, 0.0, False), "gap_s": (self.gap_s, 0.0, True),
            "slack_s": (self.slack_s, 0.0, True), "min_revisit_s": (self.min_revisit_s, 0.0, True),
            "max_window_s": (self.max_window_s, 0.0, True),
        }
        for key, (value, low, inclusive) in checks.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
                value >= low if inclusive else value > low)
            if not ok:
                raise ConfigError(key, value, f"a finite number {'>=' if inclusive else '>'} {low:g}")
        for key in ("target_precision", "target_recall"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ConfigError(key, value, "a number in [0, 1]")


@dataclass(frozen=True, slots=True)
class EventRecord:
    stamp_ns: int
    match_stamp_ns: int
    score: float
    query_modality: str
    match_modality: str


def load_events(paths: Sequence[str | Path], score_key: str = "score") -> list[EventRecord]:
    """Events from JSONL files (one JSON object per line; blank lines ignored), in file order. ``score_key``: the
    field ranked and thresholded as the score (``probability``: the calibrated one; events without it are left
    out)."""
    out: list[EventRecord] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("results", str(p), "an existing events JSONL file")
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if d.get(score_key) is None and score_key != "score":
                    continue
                out.append(EventRecord(int(d["stamp_ns"]), int(d["match_stamp_ns"]), float(d[score_key]),
                                       str(d.get("query_modality", "")), str(d.get("match_modality", ""))))
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"{p}:{n}", line[:80],
                                  f"a JSON event with stamp_ns, match_stamp_ns and score ({err})") from err
    return out


@dataclass(frozen=True)
class TruthTracks:
    """Ground-truth odometry of one or more bags: per bag, sorted stamps (ns) and positions (N, 3)."""

    names: tuple[str, ...]
    stamps_ns: tuple[np.ndarray, ...]
    positions: tuple[np.ndarray, ...]
    max_gap_ns: int = 200_000_000

    @classmethod
    def from_bags(cls, bags: Sequence[str | Path], odom_topic: str = "/odom") -> "TruthTracks":
        from cmr_fusion_ros.bag.reader import BagTopics, read_pose_track

        if not bags:
            raise ConfigError("truth", list(bags), "at least one bag with odometry")
        topics = BagTopics(odom=odom_topic)
        stamps, positions = [], []
        for b in bags:
            track = read_pose_track(b, topics)
            if len(track) < 2:
                raise BagError(str(b), f"{odom_topic} holds {len(track)} poses; ground truth needs at least 2")
            stamps.append(track.stamps_ns)
            positions.append(track.positions)
        return cls(tuple(str(b) for b in bags), tuple(stamps), tuple(positions), topics.max_extrapolation_ns)

    @classmethod
    def from_arrays(cls, tracks: Sequence[tuple[np.ndarray, np.ndarray]], names: Sequence[str] | None = None,
                    max_gap_ns: int = 200_000_000) -> "TruthTracks":
        stamps = tuple(np.asarray(s, dtype=np.int64) for s, _ in tracks)
        pos = tuple(np.asarray(p, dtype=np.float64).reshape(-1, 3) for _, p in tracks)
        for s, p in zip(stamps, pos):
            if s.ndim != 1 or s.shape[0] != p.shape[0] or s.shape[0] < 2 or np.any(np.diff(s) < 0):
                raise ConfigError("truth", s.shape, "at least 2 sorted stamps per track, one position each")
        return cls(tuple(names or (f"track_{i}" for i in range(len(stamps)))), stamps, pos, max_gap_ns)

    def positions_at(self, stamps_ns: np.ndarray) -> np.ndarray:
        """(N, 3) positions at ``stamps_ns``, linearly interpolated; NaN rows where no track covers the stamp
        (outside a track by more than ``max_gap_ns``, or inside a gap of odometry longer than twice that)."""
        t = np.asarray(stamps_ns, dtype=np.int64)
        out = np.full((t.shape[0], 3), np.nan)
        for st, pos in zip(self.stamps_ns, self.positions):
            todo = np.isnan(out[:, 0]) & (t >= st[0] - self.max_gap_ns) & (t <= st[-1] + self.max_gap_ns)
            if not todo.any():
                continue
            tt = t[todo]
            i = np.clip(np.searchsorted(st, tt, side="right"), 1, len(st) - 1)
            t0, t1 = st[i - 1], st[i]
            inside = (tt >= st[0]) & (tt <= st[-1])
            ok = ~inside | (t1 - t0 <= 2 * self.max_gap_ns)
            a = np.where(t1 > t0, (tt - t0) / np.maximum(t1 - t0, 1), 0.0)
            a = np.clip(a, 0.0, 1.0)[:, None]
            p = pos[i - 1] * (1 - a) + pos[i] * a
            p[~ok] = np.nan
            out[np.flatnonzero(todo)] = p
        return out


@dataclass(frozen=True, slots=True)
class Revisit:
    track: int
    start_ns: int
    end_ns: int
    instants: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / _NS


def _samples(truth: TruthTracks, sample_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    step = max(1, round(sample_s * _NS))
    ts, ids = [], []
    for k, st in enumerate(truth.stamps_ns):
        t = np.arange(int(st[0]), int(st[-1]) + 1, step, dtype=np.int64)
        ts.append(t)
        ids.append(np.full(t.shape[0], k))
    t = np.concatenate(ts)
    track = np.concatenate(ids)
    order = np.argsort(t, kind="stable")
    t, track = t[order], track[order]
    pos = truth.positions_at(t)
    keep = ~np.isnan(pos[:, 0])
    return t[keep], track[keep], pos[keep]


def revisit_instants(truth: TruthTracks, settings: EvalSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample times, their track index, and whether each is a revisit instant (see the module docstring)."""
    t, track, pos = _samples(truth, settings.sample_s)
    r2 = settings.radius_m ** 2
    excl = round(settings.exclude_recent_s * _NS)
    flag = np.zeros(t.shape[0], dtype=bool)
    chunk = 1024
    for s in range(0, t.shape[0], chunk):
        tq, pq = t[s:s + chunk], pos[s:s + chunk]
        # candidates: samples at least `excl` earlier; t is sorted, so they are a prefix
        limit = int(np.searchsorted(t, int(tq[-1]) - excl, side="right"))
        if limit == 0:
            continue
        d2 = ((pq[:, None, :] - pos[None, :limit, :]) ** 2).sum(-1)
        earlier = t[None, :limit] <= (tq[:, None] - excl)
        flag[s:s + chunk] = ((d2 <= r2) & earlier).any(axis=1)
    return t, track, flag


def find_revisits(truth: TruthTracks, settings: EvalSettings) -> list[Revisit]:
    """Revisit runs (see the module docstring), in time order."""
    t, track, flag = revisit_instants(truth, settings)
    gap = round(settings.gap_s * _NS) + round(settings.sample_s * _NS)
    out: list[Revisit] = []
    cur: list[int] | None = None  # [track, start, end, count]
    for ti, tr in zip(t[flag].tolist(), track[flag].tolist()):
        if cur is not None and cur[0] == tr and ti - cur[2] <= gap:
            cur[2], cur[3] = ti, cur[3] + 1
            continue
        if cur is not None:
            out.append(Revisit(*cur))
        cur = [tr, ti, ti, 1]
    if cur is not None:
        out.append(Revisit(*cur))
    min_ns = round(settings.min_revisit_s * _NS)
    out = [r for r in out if r.end_ns - r.start_ns >= min_ns]
    if settings.max_window_s > 0:
        max_ns = round(settings.max_window_s * _NS)
        split: list[Revisit] = []
        for r in out:
            parts = max(1, -(-(r.end_ns - r.start_ns) // max_ns))
            edges = np.linspace(r.start_ns, r.end_ns, parts + 1).round().astype(np.int64)
            for a, b in zip(edges[:-1], edges[1:]):
                n = int(((t >= a) & (t <= b) & flag & (track == r.track)).sum())
                split.append(Revisit(r.track, int(a), int(b), n))
        out = split
    return out


@dataclass
class EventEvaluation:
    settings: EvalSettings
    truth_bags: list[str]
    events: int
    true_events: int
    no_truth_events: int
    revisits: int
    detected_revisits: int
    revisit_seconds: float
    precision: float
    recall: float
    min_score: float
    pairs: dict[str, dict[str, int]] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)  # threshold, precision, recall, events
    best_at_target_precision: dict[str, float] | None = None
    best_at_target_recall: dict[str, float] | None = None
    goal_met: bool = False
    # per event (same order as the input): true?, distance (NaN without truth); per revisit: detected?
    event_true: list[bool] = field(default_factory=list, repr=False)
    event_distance: list[float] = field(default_factory=list, repr=False)
    revisit_list: list[Revisit] = field(default_factory=list, repr=False)
    revisit_detected: list[bool] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "settings": {k: getattr(s, k) for k in s.__dataclass_fields__},
            "truth_bags": self.truth_bags, "events": self.events, "true_events": self.true_events,
            "no_truth_events": self.no_truth_events, "revisits": self.revisits,
            "detected_revisits": self.detected_revisits, "revisit_seconds": round(self.revisit_seconds, 3),
            "precision": self.precision, "recall": self.recall, "min_score": self.min_score, "pairs": self.pairs,
            "best_at_target_precision": self.best_at_target_precision,
            "best_at_target_recall": self.best_at_target_recall, "goal_met": self.goal_met, "curve": self.curve,
            "revisit_windows": [{"track": r.track, "start_ns": r.start_ns, "end_ns": r.end_ns,
                                 "duration_s": round(r.duration_s, 3), "detected": d}
                                for r, d in zip(self.revisit_list, self.revisit_detected)],
        }

    def lines(self) -> list[str]:
        s = self.settings
        out = [
            f"ground truth: {len(self.truth_bags)} bag(s), radius {s.radius_m:g} m, exclude_recent {s.exclude_recent_s:g} s:"
            f" {self.revisits} revisits ({self.revisit_seconds:.1f} s of driving past places seen before)",
            f"events: {self.events}" + (f" (scores >= {self.min_score:.3f})" if self.events else "")
            + f"; true {self.true_events}, false {self.events - self.true_events} (of which {self.no_truth_events} "
              f"without ground truth at a stamp)",
            f"precision {_fmt(self.precision)}, recall {_fmt(self.recall)} ({self.detected_revisits}/{self.revisits} "
            f"revisits detected) at every published event",
        ]
        for pair, c in sorted(self.pairs.items()):
            out.append(f"  {pair}: {c['events']} events, {c['true']} true")
        bp = self.best_at_target_precision
        out.append(f"best recall with precision >= {s.target_precision:g}: " + (
            f"recall {_fmt(bp['recall'])} at threshold {bp['threshold']:.3f} (precision {_fmt(bp['precision'])}, "
            f"{int(bp['events'])} events)" if bp else "none (no threshold reaches that precision)"))
        br = self.best_at_target_recall
        out.append(f"best precision with recall >= {s.target_recall:g}: " + (
            f"precision {_fmt(br['precision'])} at threshold {br['threshold']:.3f} (recall {_fmt(br['recall'])})"
            if br else "none (recall never reaches that)"))
        out.append(f"goal precision >= {s.target_precision:g} at recall >= {s.target_recall:g}: "
                   f"{'MET' if self.goal_met else 'NOT MET'}")
        return out


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def evaluate_events(events: Sequence[EventRecord], truth: TruthTracks,
                    settings: EvalSettings = EvalSettings()) -> EventEvaluation:
    """Precision, recall and the PR curve of ``events`` against ``truth`` (see the module docstring)."""
    revisits = find_revisits(truth, settings)
    n = len(events)
    q = np.array([e.stamp_ns for e in events], dtype=np.int64)
    m = np.array([e.match_stamp_ns for e in events], dtype=np.int64)
    scores = np.array([e.score for e in events], dtype=np.float64)
    pq, pm = truth.positions_at(q), truth.positions_at(m)
    dist = np.linalg.norm(pq - pm, axis=1) if n else np.zeros(0)
    known = ~np.isnan(dist)
    true = known & (dist <= settings.radius_m)
    slack = round(settings.slack_s * _NS)
    starts = np.array([r.start_ns - slack for r in revisits], dtype=np.int64)
    ends = np.array([r.end_ns + slack for r in revisits], dtype=np.int64)
    hits: list[np.ndarray] = []  # per event: revisit indices whose window holds its query stamp (true events only)
    for i in range(n):
        hits.append(np.flatnonzero((starts <= q[i]) & (q[i] <= ends)) if true[i] else np.zeros(0, dtype=np.int64))
    detected = np.zeros(len(revisits), dtype=bool)
    for h in hits:
        detected[h] = True

    # PR curve: events by descending score; one point per distinct score (all events with that score included)
    order = np.argsort(-scores, kind="stable")
    curve: list[dict[str, float]] = []
    seen = np.zeros(len(revisits), dtype=bool)
    tp = found = 0
    for rank, i in enumerate(order):
        tp += int(true[i])
        new = hits[i][~seen[hits[i]]]
        seen[new] = True
        found += len(new)
        if rank + 1 < n and scores[order[rank + 1]] == scores[i]:
            continue
        curve.append({"threshold": float(scores[i]), "precision": tp / (rank + 1),
                      "recall": found / len(revisits) if revisits else float("nan"), "events": rank + 1})
    ok_p = [c for c in curve if c["precision"] >= settings.target_precision]
    best_p = max(ok_p, key=lambda c: (c["recall"] if not math.isnan(c["recall"]) else -1, c["precision"])) if ok_p else None
    ok_r = [c for c in curve if not math.isnan(c["recall"]) and c["recall"] >= settings.target_recall]
    best_r = max(ok_r, key=lambda c: (c["precision"], c["recall"])) if ok_r else None
    goal = any(c["precision"] >= settings.target_precision and not math.isnan(c["recall"])
               and c["recall"] >= settings.target_recall for c in curve)

    pairs: dict[str, dict[str, int]] = {}
    for e, t in zip(events, true.tolist()):
        c = pairs.setdefault(f"{e.query_modality}->{e.match_modality}", {"events": 0, "true": 0})
        c["events"] += 1
        c["true"] += int(t)
    return EventEvaluation(
        settings=settings, truth_bags=list(truth.names), events=n, true_events=int(true.sum()),
        no_truth_events=int((~known).sum()), revisits=len(revisits), detected_revisits=int(detected.sum()),
        revisit_seconds=float(sum(r.duration_s for r in revisits)),
        precision=float(true.sum() / n) if n else float("nan"),
        recall=float(detected.sum() / len(revisits)) if revisits else float("nan"),
        min_score=float(scores.min()) if n else float("nan"), pairs=pairs, curve=curve,
        best_at_target_precision=best_p, best_at_target_recall=best_r, goal_met=goal,
        event_true=true.tolist(), event_distance=[float(x) for x in dist], revisit_list=revisits,
        revisit_detected=detected.tolist(),
    )


def plot_evaluation(result: EventEvaluation, events: Sequence[EventRecord], truth: TruthTracks, path: str | Path,
                    *, title: str = "") -> Path:
    """Two panels: the PR curve over the score threshold (goal region shaded), and the truth trajectories with the
    revisit windows (detected green, missed orange) and the events' query positions (true / false)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.settings
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 6), dpi=100)
    if result.curve:
        rec = [c["recall"] for c in result.curve]
        prec = [c["precision"] for c in result.curve]
        ax1.plot(rec, prec, "-", color="#1f77b4", lw=1.5, label="events with score >= threshold")
        sc = ax1.scatter(rec, prec, c=[c["threshold"] for c in result.curve], cmap="viridis", s=12, zorder=3)
        fig.colorbar(sc, ax=ax1, label="score threshold")
    ax1.axhspan(s.target_precision, 1.02, xmin=0, xmax=1, color="green", alpha=0.06)
    ax1.axhline(s.target_precision, color="green", ls=":", lw=1)
    ax1.axvline(s.target_recall, color="green", ls=":", lw=1, label=f"goal P>={s.target_precision:g} at R>={s.target_recall:g}")
    ax1.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel=f"recall (revisits detected, of {result.revisits})",
            ylabel="precision (true events / events)", title="precision / recall over the score threshold")
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="lower left", fontsize=8)

    for k, (st, pos) in enumerate(zip(truth.stamps_ns, truth.positions)):
        ax2.plot(pos[:, 0], pos[:, 1], color=("0.55", "0.75", "0.4", "0.85")[k % 4], lw=1.2,
                 label=f"truth: {Path(truth.names[k]).name}")
    for r, d in zip(result.revisit_list, result.revisit_detected):
        t = np.arange(r.start_ns, r.end_ns + 1, max(1, round(s.sample_s * _NS)), dtype=np.int64)
        p = truth.positions_at(t)
        ax2.plot(p[:, 0], p[:, 1], color="#2ca02c" if d else "#ff7f0e", lw=7, alpha=0.45, solid_capstyle="butt",
                 zorder=2)
    ax2.plot([], [], color="#2ca02c", lw=6, alpha=0.45, label="revisit, detected")
    ax2.plot([], [], color="#ff7f0e", lw=6, alpha=0.45, label="revisit, missed")
    if events:
        pq = truth.positions_at(np.array([e.stamp_ns for e in events], dtype=np.int64))
        tr = np.array(result.event_true, dtype=bool)
        ax2.plot(pq[~tr, 0], pq[~tr, 1], "x", color="red", ms=3, mew=0.6, alpha=0.35, zorder=3,
                 label=f"false event ({int((~tr).sum())})")
        ax2.plot(pq[tr, 0], pq[tr, 1], "o", color="#1f77b4", ms=3, zorder=4,
                 label=f"true event ({int(tr.sum())}, query position)")
    ax2.set_aspect("equal", adjustable="datalim")
    ax2.set(xlabel="x [m] (odom)", ylabel="y [m] (odom)", title="revisits and events")
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="best", fontsize=7)
    fig.suptitle(title or f"precision {_fmt(result.precision)}, recall {_fmt(result.recall)}", fontsize=9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out

