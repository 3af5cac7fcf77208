"""Pictures people look at: the trajectory of a drive with the match events drawn on it (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_matches"]

_COLOURS = {"camera": "#1f77b4", "lidar": "#2ca02c", "radar": "#ff7f0e"}


def plot_matches(trajectory: np.ndarray, events: Sequence[dict[str, Any]], path: str | Path, *, title: str = "",
                 truth_radius_m: float = 10.0) -> Path:
    """Trajectory (N x 2 or N x 3 positions) in grey; each event a line from the query to the matched position,
    coloured by the matched modality, solid when within ``truth_radius_m`` (a true revisit), dashed red otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    traj = np.asarray(trajectory, dtype=float)
    if traj.size:
        ax.plot(traj[:, 0], traj[:, 1], color="0.7", lw=1.5, label="trajectory (odometry)", zorder=1)
        ax.plot(traj[0, 0], traj[0, 1], "k^", ms=8, label="start", zorder=3)
    shown: set[str] = set()
    for e in events:
        q, m = e.get("query_pose"), e.get("match_pose")
        if not q or not m:
            continue
        true = e.get("distance") is not None and e["distance"] <= truth_radius_m
        pair = f"{e['query_modality']}→{e['match_modality']}"
        label = pair if true and pair not in shown else None
        if label:
            shown.add(pair)
        ax.plot([q[0], m[0]], [q[1], m[1]], color=_COLOURS.get(e["match_modality"], "k") if true else "red",
                ls="-" if true else "--", lw=1.2, alpha=0.8, label=label, zorder=2)
        ax.plot(q[0], q[1], "o", color=_COLOURS.get(e["query_modality"], "k"), ms=3, zorder=3)
    if any(not (e.get("distance") is not None and e["distance"] <= truth_radius_m) for e in events):
        ax.plot([], [], color="red", ls="--", label=f"false match (> {truth_radius_m:g} m or no pose)")
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
