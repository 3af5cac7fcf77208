"""Pictures people look at: the trajectory of a drive with the match events drawn on it (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["match_label", "plot_matches"]

_COLOURS = {"camera": "#1f77b4", "lidar": "#2ca02c", "radar": "#ff7f0e"}


def match_label(event: dict[str, Any], own_robot: str | None = None) -> str:
    """The legend entry (and colour) of an event: its modality pair, prefixed by the matched robot when that is
    another robot than ``own_robot``."""
    pair = f"{event['query_modality']}→{event['match_modality']}"
    robot = event.get("match_robot") or ""
    return f"{robot}: {pair}" if own_robot is not None and robot and robot != own_robot else pair


def plot_matches(trajectory: np.ndarray, events: Sequence[dict[str, Any]], path: str | Path, *, title: str = "",
                 truth_radius_m: float = 10.0, own_robot: str | None = None) -> Path:
    """Trajectory (N x 2 or N x 3 positions) in grey; each event a line from the query to the matched position,
    coloured by the matched modality, solid when within ``truth_radius_m`` (a true revisit), dashed red otherwise.
    With ``own_robot``, matches of another robot's entries (``match_robot``) get a colour of their own per robot and
    pair, drawn with square markers and labelled with the robot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    traj = np.asarray(trajectory, dtype=float)
    if traj.size:
        ax.plot(traj[:, 0], traj[:, 1], color="0.7", lw=1.5, label="trajectory (odometry)", zorder=1)
        ax.plot(traj[0, 0], traj[0, 1], "k^", ms=8, label="start", zorder=3)
    def key(e: dict[str, Any]) -> str:
        return match_label(e, own_robot)

    pairs = sorted({key(e) for e in events})
    colours = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(pairs)}
    shown: set[str] = set()
    n_false = 0
    for e in events:
        q, m = e.get("query_pose"), e.get("match_pose")
        if not q or not m:
            n_false += 1
            continue
        true = e.get("distance") is not None and e["distance"] <= truth_radius_m
        pair = key(e)
        if true:
            label = pair if pair not in shown else None
            shown.add(pair)
            # query and match nearly coincide: mark the query, link to the match
            ax.plot([q[0], m[0]], [q[1], m[1]], color=colours[pair], lw=2.0, alpha=0.9, zorder=3)
            ax.plot(q[0], q[1], "s" if ":" in pair else "o", color=colours[pair], ms=6, mec="k", mew=0.4, label=label,
                    zorder=4)
        else:
            n_false += 1
            ax.plot([q[0], m[0]], [q[1], m[1]], color="red", ls="--", lw=0.9, alpha=0.6, zorder=2)
            ax.plot(q[0], q[1], "x", color="red", ms=5, zorder=4)
    n_true = len(events) - n_false
    if n_false:
        ax.plot([], [], color="red", ls="--", marker="x", label=f"false: > {truth_radius_m:g} m or no pose ({n_false})")
    ax.plot([], [], " ", label=f"true revisits: {n_true} of {len(events)}")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x [m] (odom)")
    ax.set_ylabel("y [m] (odom)")
    ax.set_title(title or f"{len(events)} match events")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
