"""What the match markers show, as plain values: a line from the query's position to the matched one (coloured by the
matched modality, or in the fleet colour when the matched entry is another robot's; opacity from the score) and a text
label with the pair, the score and the distance (and the other robot's name).

``ros.messages.markers`` turns these into ``visualization_msgs/MarkerArray`` for the live nodes, ``bag.writer``
into typestore messages for the bag ``cmr-fusion process`` writes: both show the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cmr_fusion_ros.core.policy import MatchResult
from cmr_fusion_ros.core.types import Modality

__all__ = ["COLOURS", "FLEET_COLOUR", "MarkerSpec", "match_markers"]

COLOURS = {Modality.CAMERA: (0.2, 0.6, 1.0), Modality.LIDAR: (0.2, 0.9, 0.3), Modality.RADAR: (1.0, 0.5, 0.1)}
FLEET_COLOUR = (0.9, 0.2, 0.9)  # matches of another robot's entries
LINE_WIDTH_M = 0.3
TEXT_HEIGHT_M = 1.0


@dataclass(frozen=True, slots=True)
class MarkerSpec:
    """One ``visualization_msgs/Marker``: ``kind`` ``line`` (LINE_LIST through ``points``, width ``scale``) or
    ``text`` (TEXT_VIEW_FACING at ``position``, height ``scale``)."""

    kind: str
    ns: str
    id: int
    rgba: tuple[float, float, float, float]
    scale: float
    points: tuple[tuple[float, float, float], ...] = ()
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    text: str = ""
    lifetime_ns: int = 0


def match_markers(events: Sequence[MatchResult], start_id: int, lifetime_s: float = 30.0,
                  own_robot: str = "") -> list[MarkerSpec]:
    """Two markers (line, label) per event whose two poses are known, ids ``start_id``, ``start_id + 1``, ...

    A match of an entry another robot than ``own_robot`` wrote is drawn in :data:`FLEET_COLOUR`, in the namespace
    ``cmr_match_fleet/<query modality>``, its label naming that robot."""
    out: list[MarkerSpec] = []
    life = round(lifetime_s * 1e9)
    for i, r in enumerate(e for e in events if e.query_pose is not None and e.match_pose is not None):
        q, m = r.query_pose, r.match_pose
        other = bool(own_robot) and bool(r.match_robot) and r.match_robot != own_robot
        rgb = FLEET_COLOUR if other else COLOURS[r.match_modality]
        out.append(MarkerSpec("line", f"cmr_match{'_fleet' if other else ''}/{r.query_modality.value}", start_id + 2 * i,
                              (*rgb, max(0.3, min(1.0, r.score))), LINE_WIDTH_M,
                              points=((q.x, q.y, q.z + 1.0), (m.x, m.y, m.z + 1.0)), lifetime_ns=life))
        dist = "" if math.isnan(r.distance) else f" {r.distance:.1f} m"
        out.append(MarkerSpec("text", f"cmr_match_label/{r.query_modality.value}", start_id + 2 * i + 1,
                              (1.0, 1.0, 1.0, 1.0), TEXT_HEIGHT_M,
                              position=((q.x + m.x) / 2, (q.y + m.y) / 2, max(q.z, m.z) + 2.0),
                              text=(f"{r.match_robot}: " if other else "")
                              + f"{r.query_modality.value}->{r.match_modality.value} {r.score:.2f}{dist}",
                              lifetime_ns=life))
    return out
