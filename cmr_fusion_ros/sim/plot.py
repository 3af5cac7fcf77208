"""A top view of the town with the sessions' drives (PNG, matplotlib Agg): what `cmr-fusion simulate` wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmr_fusion_ros.sim.session import SessionPlan

__all__ = ["plot_town"]


def plot_town(plans: list[SessionPlan], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    town = plans[0].town
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    x0, y0, x1, y1 = town.extent
    hs = town.half_street
    ax.add_patch(Rectangle((x0 - hs, y0 - hs), x1 - x0 + 2 * hs, y1 - y0 + 2 * hs, color=(0.85, 0.9, 0.8), zorder=0))
    for x in town.street_x:
        ax.add_patch(Rectangle((x - hs, y0 - hs), 2 * hs, y1 - y0 + 2 * hs, color=(0.6, 0.6, 0.6), zorder=1))
    for y in town.street_y:
        ax.add_patch(Rectangle((x0 - hs, y - hs), x1 - x0 + 2 * hs, 2 * hs, color=(0.6, 0.6, 0.6), zorder=1))
    for b in town.buildings:
        for bx0, by0, bx1, by1, _ in b.boxes:
            ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, color=b.wall_colour, ec="k", lw=0.3, zorder=2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, plan in enumerate(plans):
        t = np.linspace(0.0, plan.duration, max(2, int(plan.duration * 5)))
        xy = np.array([[s.x, s.y] for s in (plan.speed.state(plan.loop, tt) for tt in t)])
        c = colours[k % len(colours)]
        ax.plot(xy[:, 0], xy[:, 1], "-", color=c, lw=2.5 - 1.5 * k / max(1, len(plans)), zorder=3 + k,
                label=f"session {k:02d} ({plan.world.lighting.name}, {plan.duration:g} s)")
        ax.plot(xy[0, 0], xy[0, 1], "o", color=c, zorder=10)
        ax.annotate("", xy=xy[min(5, len(xy) - 1)], xytext=xy[0], arrowprops={"arrowstyle": "->", "color": c}, zorder=10)
    ax.set_aspect("equal")
    ax.set_xlim(x0 - hs - 5, x1 + hs + 5)
    ax.set_ylim(y0 - hs - 5, y1 + hs + 5)
    ax.set_xlabel("x (m, odom)")
    ax.set_ylabel("y (m, odom)")
    ax.set_title(f"town seed {town.seed}: {town.counts['buildings']} buildings, loop {plans[0].loop.length:.0f} m "
                 f"(o = start)")
    ax.legend(loc="upper right", fontsize=8)
    out = Path(path)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
