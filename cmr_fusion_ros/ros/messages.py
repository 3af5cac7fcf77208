"""Core values -> ROS messages: match events, RViz/Foxglove markers, diagnostics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Quaternion
from geometry_msgs.msg import Pose as RosPose
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from cmr_fusion_msgs.msg import MatchEvent, MatchEventArray
from cmr_fusion_ros.core.match_markers import match_markers
from cmr_fusion_ros.core.pipeline import PipelineOutput
from cmr_fusion_ros.core.policy import MatchResult
from cmr_fusion_ros.core.types import Pose
from cmr_fusion_ros.ros.conversions import make_header, ns_to_stamp

__all__ = ["diagnostics_message", "match_event", "match_event_array", "markers", "pose_to_ros", "publish_events",
           "ros_to_pose"]



def pose_to_ros(p: Pose | None) -> RosPose:
    if p is None:
        return RosPose(orientation=Quaternion(w=1.0))
    return RosPose(position=Point(x=p.x, y=p.y, z=p.z), orientation=Quaternion(x=p.qx, y=p.qy, z=p.qz, w=p.qw))


def ros_to_pose(p: RosPose) -> Pose:
    return Pose(p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y, p.orientation.z,
                p.orientation.w)


def match_event(r: MatchResult) -> MatchEvent:
    e = MatchEvent(header=make_header(r.query_stamp_ns, r.query_frame_id))
    e.query_modality, e.query_topic, e.query_id = r.query_modality.value, r.query_topic, int(r.query_id)
    e.match_modality, e.match_topic, e.match_id = r.match_modality.value, r.match_topic, int(r.match_id)
    e.match_stamp, e.match_frame_id = ns_to_stamp(r.match_stamp_ns), r.match_frame_id
    e.match_robot, e.match_session = r.match_robot, r.match_session
    e.score, e.rank = float(r.score), int(r.rank)
    e.probability = float(r.probability)  # NaN when the pair has no calibration
    e.query_pose_valid, e.query_pose = r.query_pose is not None, pose_to_ros(r.query_pose)
    e.match_pose_valid, e.match_pose = r.match_pose is not None, pose_to_ros(r.match_pose)
    e.distance = float(r.distance)
    e.pose_frame_id = r.pose_frame_id
    return e


def match_event_array(out: PipelineOutput) -> MatchEventArray:
    return MatchEventArray(header=make_header(out.stamp_ns, out.frame_id), events=[match_event(r) for r in out.events])


def markers(events: Sequence[MatchResult], frame_id: str, stamp_ns: int, start_id: int, lifetime_s: float = 30.0,
            own_robot: str = "") -> MarkerArray:
    """One line per match with known poses (query -> matched position, coloured by the matched modality; another
    robot's than ``own_robot`` in the fleet colour) and a text label with the score (``core.match_markers``, also what
    ``cmr-fusion process`` writes into its bag)."""
    arr = MarkerArray()
    header = make_header(stamp_ns, frame_id)
    for spec in match_markers(events, start_id, lifetime_s, own_robot):
        mk = Marker(header=header, ns=spec.ns, id=spec.id, action=Marker.ADD,
                    type=Marker.LINE_LIST if spec.kind == "line" else Marker.TEXT_VIEW_FACING)
        mk.pose.orientation.w = 1.0
        mk.pose.position = Point(x=spec.position[0], y=spec.position[1], z=spec.position[2])
        if spec.kind == "line":
            mk.scale.x = spec.scale
        else:
            mk.scale.z = spec.scale
        mk.color = ColorRGBA(r=spec.rgba[0], g=spec.rgba[1], b=spec.rgba[2], a=spec.rgba[3])
        mk.points = [Point(x=x, y=y, z=z) for x, y, z in spec.points]
        mk.text = spec.text
        mk.lifetime = ns_to_stamp(spec.lifetime_ns)
        arr.markers.append(mk)
    return arr



def publish_events(out: PipelineOutput, pub_matches, pub_markers, marker_frame: str, start_id: int,
                   own_robot: str = "") -> int:
    """A frame's events as one ``MatchEventArray`` on ``pub_matches`` and their markers on ``pub_markers`` (when not
    None): what fusion_node and memory_node publish. Returns the number of events (0: nothing published)."""
    if not out.events:
        return 0
    pub_matches.publish(match_event_array(out))
    if pub_markers is not None:
        arr = markers(out.events, marker_frame, out.stamp_ns, start_id, own_robot=own_robot)
        if arr.markers:
            pub_markers.publish(arr)
    return len(out.events)

STORE_KEYS = ("store", "robot", "connected", "write_queue", "dropped_writes", "write_failures", "search_failures")


def store_values(node, memory) -> dict[str, float | int | str]:
    """The memory store's diagnostics values; one throttled warning while a fleet database is unreachable (searches
    then fail soft and writes wait in the queue)."""
    stats = memory.stats()
    if not stats.connected:
        node.get_logger().warning(
            f"memory database unreachable: {stats.search_failures} searches failed, {stats.write_queue} entries "
            f"queued ({stats.dropped_writes} dropped); reconnecting", throttle_duration_sec=10.0)
    return {k: getattr(stats, k) for k in STORE_KEYS}


def diagnostics_message(node_name: str, stamp_ns: int, streams: Mapping[str, Mapping[str, float | int | str]],
                        memory: Mapping[str, float | int | str], problems: Iterable[str] = ()) -> DiagnosticArray:
    """One DiagnosticStatus per stream (rate, latency, drops, bad messages) and one for the memory.

    Names in diagnostic_updater's form, ``<node name>: <task>`` (``fusion_node: stream lidar``,
    ``fusion_node: memory``), what the diagnostic aggregator's analyzers match on; ``hardware_id`` is the fully
    qualified node name (tells namespaced instances apart). Levels come from the recent window: a stream is WARN
    while it had drops or bad messages in the last ``window_s`` (``dropped_recent``, ``bad_messages_recent``; the
    totals when a summary has no window), the memory ERROR while ``problems`` (the recent ones) is not empty.
    """
    fqn = node_name if node_name.startswith("/") else f"/{node_name}"
    short = fqn.rsplit("/", 1)[-1]
    arr = DiagnosticArray(header=make_header(stamp_ns))
    problems = list(problems)
    for name, values in streams.items():
        recent = "dropped_recent" in values
        dropped = int(values.get("dropped_recent" if recent else "dropped", 0))
        bad = int(values.get("bad_messages_recent" if recent else "bad_messages", 0))
        since = f" in the last {float(values['window_s']):g} s" if recent and "window_s" in values else ""
        st = DiagnosticStatus(level=DiagnosticStatus.WARN if dropped or bad else DiagnosticStatus.OK,
                              name=f"{short}: stream {name}", hardware_id=fqn,
                              message=f"{dropped} dropped, {bad} bad messages{since}" if dropped or bad else "ok")
        st.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        arr.status.append(st)
    mem = DiagnosticStatus(level=DiagnosticStatus.ERROR if problems else DiagnosticStatus.OK,
                           name=f"{short}: memory", hardware_id=fqn,
                           message="; ".join(problems)[:200] if problems else "ok")
    mem.values = [KeyValue(key=k, value=_fmt(v)) for k, v in memory.items()]
    arr.status.append(mem)
    return arr


def _fmt(v: float | int | str) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
