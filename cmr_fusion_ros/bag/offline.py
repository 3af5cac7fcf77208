"""Offline processing: a bag through the same stream runner as ``fusion_node``, at full speed, without DDS.

Messages are taken in the bag's log-time order (several bags are merged), exactly as a replay would deliver them to
``fusion_node``, and each goes through :class:`cmr_fusion_ros.core.stream.StreamRunner` one after the other:
odometry feeds the pose buffer, each sensor message is decoded, embedded, searched and inserted. A frame stamped
just after the newest odometry waits for the odometry to pass its stamp (on the bag's log time, at most
``odometry.max_extrapolation_s``) as the node waits on its clock, so both look up the same interpolated pose. A live
replay and offline processing of the same bag give the same events (as long as the live node drops nothing; the
memory ids may be numbered differently, see :mod:`cmr_fusion_ros.core.stream`).

**Look-ahead** (``look_ahead`` N > 0, ``cmr-fusion process --look-ahead``): what a message's embedding does not
share with the others runs ahead in a worker process per sensor topic
(:class:`~cmr_fusion_ros.core.workers.KeyedWorkers`, forked at the start, so each holds a copy of the encoders), and
the stages overlap on several cores: up to N sensor messages are sent (raw, or where they lie in the bag) to be
deserialised and decoded ahead of the main loop (a frame whose route needs no pose, camera and LiDAR, is embedded
there and then: one call instead of two), and up to N other frames (a multi-scan radar's) are embedded (merge, views,
preprocess, encode) ahead of their commit. Everything that depends on the order stays in this process, in log order,
as with N = 0: the odometry, the release of frames waiting for it, each frame's
:meth:`~cmr_fusion_ros.core.pipeline.FusionPipeline.prepare` (its pose, the topic's time-jump check, a merge-history
reset) at the moment it is released, and the commit (search, policy, insert, events written). A topic's frames are
embedded one after the other in its own worker, so a multi-scan radar merges the same scans with the same poses. The
events, the memory and the output bag are the same for every N; N = 0 runs everything in the calling thread through
the same steps, and so does any N where workers cannot be forked (no ``fork``; or encoders with several
onnxruntime threads or a GPU provider, which a forked child cannot run). Where the bag's layout allows it (MCAP files
with uncompressed chunks, :mod:`cmr_fusion_ros.bag.positions`), this process reads only the bag's index and the
odometry, and each worker reads its own messages' bytes from the file; otherwise the raw messages are read here
through ``rosbags`` and sent to the workers. Processes, not threads: most of the work is
short numpy and Python steps holding the GIL (see :mod:`cmr_fusion_ros.core.workers`). numpy's BLAS is held to one
thread meanwhile (:mod:`cmr_fusion_ros.core.blas`).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmr_fusion_ros.bag.positions import MessageReader, message_positions
from cmr_fusion_ros.core.blas import blas_threads
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.decode import Frame
from cmr_fusion_ros.core.embed import Embedded
from cmr_fusion_ros.core.errors import BagError, CmrFusionError
from cmr_fusion_ros.core.accumulate import STAT_KEYS
from cmr_fusion_ros.core.pipeline import EmbedJob, FusionPipeline, PipelineOutput
from cmr_fusion_ros.core.policy import MatchResult
from cmr_fusion_ros.core.stream import StreamRunner
from cmr_fusion_ros.core.types import Pose
from cmr_fusion_ros.core.validate import require
from cmr_fusion_ros.core.workers import KeyedWorkers, Ticket

__all__ = ["DEFAULT_LOOK_AHEAD", "MAX_LOOK_AHEAD", "OfflineSummary", "event_record", "process_bags", "resolve_topic"]

ODOM = "nav_msgs/msg/Odometry"
DEFAULT_LOOK_AHEAD = 32  # sensor messages decoded, and frames embedded, ahead of the in-order commits
MAX_LOOK_AHEAD = 4096


def resolve_topic(topic: str, namespace: str = "/") -> str:
    """Relative topic names resolve against the namespace, as a node would resolve them."""
    if topic.startswith("/"):
        return topic
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{topic}"


def event_record(r: MatchResult) -> dict[str, Any]:
    """One match event as a JSON-ready dict (JSONL output, tests, the demo)."""
    def pose(p: Pose | None):
        return None if p is None else [p.x, p.y, p.z, p.qx, p.qy, p.qz, p.qw]

    return {
        "stamp_ns": r.query_stamp_ns, "query_modality": r.query_modality.value, "query_topic": r.query_topic,
        "query_id": r.query_id, "query_frame_id": r.query_frame_id, "match_modality": r.match_modality.value,
        "match_topic": r.match_topic, "match_id": r.match_id, "match_stamp_ns": r.match_stamp_ns,
        "match_frame_id": r.match_frame_id, "match_robot": r.match_robot, "match_session": r.match_session,
        "score": round(float(r.score), 6), "rank": r.rank,
        "probability": None if math.isnan(r.probability) else round(float(r.probability), 6),
        "query_pose": pose(r.query_pose), "match_pose": pose(r.match_pose),
        "distance": None if math.isnan(r.distance) else round(float(r.distance), 4),
        "pose_frame_id": r.pose_frame_id,
    }


UNREADABLE = "unreadable"  # a worker's answer for a message whose CDR cannot be deserialised
BAD = "bad"  # ... for a bad message (a ConversionError of the decoder)


@dataclass(frozen=True)
class Damaged:
    """A worker's answer for a message whose record in the file is not what the bag's index says (a BagError)."""

    problem: str


def _fork_safe(config: FusionConfig) -> bool:
    """Whether the loaded encoders may run in a forked worker: single-threaded CPU onnxruntime sessions (a forked
    child has none of the parent's thread-pool threads, nor its GPU context)."""
    return config.encoders.intra_op_threads == 1 and set(config.encoders.providers) == {"CPUExecutionProvider"}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


@dataclass
class OfflineSummary:
    bags: list[str]
    messages: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    bad_messages: int = 0
    time_jumps: int = 0
    radar_scans_merged: int = 0  # multi-scan radar models: earlier scans merged in
    radar_scans_missing: int = 0  # earlier scans wanted but not found (start of a bag, odometry gaps)
    radar_scans_without_pose: int = 0  # scans used alone: no odometry pose at their stamp
    copied: dict[str, int] = field(default_factory=dict)  # input topics copied into matches/ (odometry, tf)
    events: int = 0
    events_with_poses: int = 0
    true_events: int = 0
    truth_radius_m: float = 10.0
    encode_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    search_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    memory_entries: int = 0
    memory_skipped_duplicate: int = 0  # frames not stored: near-duplicates of the previous entry (admission filter)
    memory_skipped_capacity: int = 0
    bag_duration_s: float = 0.0
    wall_s: float = 0.0
    realtime_factor: float = 0.0
    look_ahead: int = 0
    worker_processes: int = 0  # forked workers that decoded and embedded (0: all in the calling process)
    blas_limit: str = ""  # how numpy's BLAS was held to one thread (core.blas.blas_threads)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def lines(self) -> list[str]:
        prec = (f"{self.true_events}/{self.events_with_poses}" if self.events_with_poses
                else "n/a (no events)" if not self.events else "n/a (no event has poses for both places)")
        out = [
            f"bags: {', '.join(self.bags)}",
            f"messages: {self.messages}; frames: " + ", ".join(f"{k} {v}" for k, v in self.frames.items())
            + f"; bad messages: {self.bad_messages}",
            (f"time jumped back {self.time_jumps} times (state reset)" if self.time_jumps else "time lines: 1")
            + (f"; radar: {self.radar_scans_merged} earlier scans merged, {self.radar_scans_missing} not found"
               + (f", {self.radar_scans_without_pose} scans without a pose (used alone)"
                  if self.radar_scans_without_pose else "")
               if self.radar_scans_merged or self.radar_scans_missing or self.radar_scans_without_pose else ""),
            f"match events: {self.events}; true revisits by ground truth (distance <= {self.truth_radius_m:g} m): {prec}",
            f"memory: {self.memory_entries} entries"
            + (f" ({self.memory_skipped_duplicate} frames not stored as near-duplicates"
               f"{f', {self.memory_skipped_capacity} over capacity' if self.memory_skipped_capacity else ''})"
               if self.memory_skipped_duplicate or self.memory_skipped_capacity else ""),
        ]
        for m, v in self.encode_ms.items():
            s = self.search_ms.get(m, {})
            out.append(f"  {m}: encode p50 {v['p50']:.1f} ms p99 {v['p99']:.1f} ms; search p50 {s.get('p50', 0):.2f} ms "
                       f"p99 {s.get('p99', 0):.2f} ms")
        out.append(f"bag {self.bag_duration_s:.1f} s processed in {self.wall_s:.1f} s: "
                   f"{self.realtime_factor:.1f}x real time (look-ahead {self.look_ahead}, "
                   f"{self.worker_processes} worker processes)")
        return out


def process_bags(
    bags: Sequence[str | Path],
    config: FusionConfig,
    *,
    pipeline: FusionPipeline | None = None,
    out_dir: str | Path | None = None,
    namespace: str = "/",
    node_name: str = "fusion_node",
    truth_radius_m: float = 10.0,
    progress: bool = True,
    on_output: Callable[[PipelineOutput], None] | None = None,
    rig_from_bag: bool = False,
    look_ahead: int = DEFAULT_LOOK_AHEAD,
) -> OfflineSummary:
    """Run ``bags`` through the pipeline; with ``out_dir``: ``events.jsonl``, ``matches/`` (mcap bag of
    ``MatchEventArray``, the markers the node would publish, and the odometry, ``/tf`` and ``/tf_static`` of the
    input bags), ``summary.json`` and (unless the config names one) the memory in ``memory/``. With
    ``rig_from_bag`` the rig-aware inputs take the mounts and camera intrinsics the ``rig.*`` parameters do not give
    from the first bag's ``/tf_static`` and ``CameraInfo`` (a live node has only the parameters). ``look_ahead``:
    sensor messages decoded and frames embedded ahead of the in-order commits in a worker process per topic (0: all
    in this process; the results are the same, see the module doc)."""
    from rosbags.highlevel import AnyReader

    require(isinstance(look_ahead, int) and not isinstance(look_ahead, bool) and 0 <= look_ahead <= MAX_LOOK_AHEAD,
            "look_ahead", look_ahead, f"an integer in 0..{MAX_LOOK_AHEAD}")

    paths = [Path(b) for b in bags]
    for p in paths:
        if not p.exists():
            raise BagError(str(p), "no such bag")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    if pipeline is None:
        memory_dir = None
        if out is not None and not config.memory.persistence.directory:
            memory_dir = str(out / "memory")
        pipeline = FusionPipeline.from_config(config, memory_dir=memory_dir, namespace=namespace)
    topics = {resolve_topic(config.stream(m).topic, namespace): m for m in config.enabled_modalities}
    if rig_from_bag and config.rig.enabled:  # the sensors' mounts and camera intrinsics recorded in the (first) bag
        from cmr_fusion_ros.bag.rig_info import rig_of_topics

        pipeline.set_recorded_rig(rig_of_topics(paths[0], {m: t for t, m in topics.items()}))
    odom_topic = resolve_topic(config.odometry.topic, namespace) if config.odometry.topic else None
    runner = StreamRunner(pipeline, config, topics)
    summary = OfflineSummary(bags=[str(p) for p in paths], truth_radius_m=truth_radius_m,
                             frames={m.value: 0 for m in config.enabled_modalities}, look_ahead=look_ahead)
    bags_named = ", ".join(summary.bags)  # the bags an error names
    encode: dict[str, list[float]] = {m.value: [] for m in config.enabled_modalities}
    search: dict[str, list[float]] = {m.value: [] for m in config.enabled_modalities}
    events_file = (out / "events.jsonl").open("w") if out is not None else None
    writer = None
    if out is not None:
        from cmr_fusion_ros.bag.events import EventBagWriter

        bag_out = out / "matches"
        if bag_out.exists():
            import shutil

            shutil.rmtree(bag_out)
        writer = EventBagWriter(bag_out, topic=resolve_topic(f"{node_name}/matches", namespace),
                                markers_topic=resolve_topic(f"{node_name}/markers", namespace)
                                if config.output.markers else None, marker_frame=config.output.marker_frame,
                                own_robot=pipeline.memory.robot)

    def handle(res: PipelineOutput, log_ns: int) -> None:
        for p in res.frames:
            encode[p.modality.value].append(p.encode_ms)
            search[p.modality.value].append(p.search_ms)
        for r in res.events:
            summary.events += 1
            if not math.isnan(r.distance):
                summary.events_with_poses += 1
                summary.true_events += int(r.distance <= truth_radius_m)
            if events_file is not None:
                events_file.write(json.dumps(event_record(r)) + "\n")
        if writer is not None:
            writer.write(res, log_ns)
        if on_output is not None:
            on_output(res)

    waiting: collections.deque[tuple[int, Frame, tuple | None]] = collections.deque()  # (seq, frame, early)
    embedding: collections.deque[tuple[EmbedJob, Ticket]] = collections.deque()  # sent to be embedded, not committed
    decoded: dict[int, Frame] = {}  # in a topic's worker: the frames decoded there, until their embedding

    def work(call: tuple, payload: bytes | None) -> Any:
        """A topic's worker (a forked process with look-ahead, else this one), answering in plain tuples (quick to
        send): ``("load", seq, topic, msgtype, log_ns, where)`` with the raw message as payload, or ``where`` it lies
        in the bag (read here) -> ``(frame_id, stamp_ns, decode_ms, reduction, early)`` of its frame, ``UNREADABLE``
        (corrupt CDR), ``BAD`` (a bad message), :class:`Damaged` (the record is not the indexed message) or None (not
        a configured stream: the other camera transport). ``early`` is the route's output when the route needs
        nothing from the main loop (no multi-scan merge: pose and history resets do not change a camera or LiDAR
        embedding; the views are fixed by the configuration), so the frame is embedded at once and needs no second
        call; else None and the frame is kept here for ``("embed", seq, pose, views, jumped, reset)`` -> the
        route's output ``(vector, views, preprocess_ms, encode_ms)``. ``("stats",)`` -> the multi-scan merge counts
        of the routes run here."""
        if call[0] == "load":
            _, seq, topic, msgtype, log_ns, where = call
            if where is not None:
                try:
                    payload = at.read(where)
                except BagError as err:
                    return Damaged(str(err))
            try:
                msg = reader.deserialize(payload, msgtype)
            except Exception:  # rosbags raises several untyped errors on corrupt CDR
                return UNREADABLE
            if not runner.accepts(topic, msgtype):
                return None
            try:
                frame = runner.decode(topic, msg, log_ns)
            except CmrFusionError:
                return BAD
            route = pipeline.embedder(frame.modality, frame.topic)
            if not route.multi_scan:
                item = pipeline.run(EmbedJob(frame, route, None, pipeline.views_for(frame.modality), False, False))
                early = (item.vector, item.views, item.preprocess_ms, item.encode_ms)
                return frame.frame_id, frame.stamp_ns, frame.decode_ms, frame.reduction, early
            decoded[seq] = frame
            return frame.frame_id, frame.stamp_ns, frame.decode_ms, frame.reduction, None
        if call[0] == "embed":
            _, seq, pose, views, jumped, reset = call
            frame = decoded.pop(seq)
            item = pipeline.run(EmbedJob(frame, pipeline.embedder(frame.modality, frame.topic), pose, views, jumped,
                                         reset))
            return item.vector, item.views, item.preprocess_ms, item.encode_ms
        return pipeline.accumulation_stats()

    def commit(keep: int) -> None:
        """Commit the embedded frames, oldest first, until ``keep`` are left."""
        while len(embedding) > keep:
            job, ticket = embedding.popleft()
            frame = job.frame
            done = runner.commit(frame, pipeline.embedding_input(job, Embedded(*ticket.result())))
            summary.frames[frame.modality.value] += 1
            handle(done.output, frame.receive_ns)

    def release(now_ns: int | None) -> None:
        """Process the waiting frames, in arrival order, whose pose can be looked up now (or that waited as long as
        the live node would; all at the end of the bags): prepared here and now, embedded by the topic's worker,
        committed once more than ``look_ahead`` are on the way."""
        while waiting and (now_ns is None or not runner.waits_for_pose(waiting[0][1])
                           or now_ns - waiting[0][1].receive_ns >= runner.pose_wait_ns):
            seq, frame, early = waiting.popleft()
            job = pipeline.prepare(frame)
            if early is not None:  # embedded when it was loaded (its route needs no pose)
                embedding.append((job, Ticket.done(early)))
            else:
                embedding.append((job, workers.submit(frame.topic, ("embed", seq, job.pose, job.views, job.jumped,
                                                                    job.reset))))
            commit(look_ahead)
        if now_ns is None:
            commit(0)

    t_start = time.perf_counter()
    first = last = None
    guard = contextlib.ExitStack()
    workers: KeyedWorkers | None = None
    at: MessageReader | None = None  # reads a message where the bag's index says it is (inherited by the workers)
    merge_stats: dict[str, int] | None = None
    try:
        summary.blas_limit = guard.enter_context(blas_threads(1))
        stack = contextlib.ExitStack()
        try:
            reader = stack.enter_context(AnyReader(paths))
        except Exception as err:  # rosbags raises several untyped errors on truncated or corrupt files
            raise BagError(bags_named, f"cannot open the bag: {err}") from err
        with stack:
            conns = [c for c in reader.connections if c.topic in topics or (c.topic == odom_topic and c.msgtype == ODOM)]
            missing = [t for t in topics if not any(c.topic == t for c in conns)]
            if len(missing) == len(topics):
                have = sorted({c.topic for c in reader.connections})
                raise BagError(summary.bags[0], f"none of the configured topics {sorted(topics)} is in the bag (has {have})")
            try:
                positions = message_positions(reader, conns)  # None: a layout read through rosbags
            except BagError as err:
                raise BagError(bags_named, f"cannot open the bag: {err}") from err
            if positions is not None:
                at = MessageReader(positions.files)
            # a worker per sensor topic, forked now: it holds a copy of the reader's types and the encoders
            workers = KeyedWorkers(work, sorted({c.topic for c in conns if c.topic != odom_topic}),
                                   processes=look_ahead > 0 and _fork_safe(pipeline.config), name="process",
                                   result_bytes=4 * pipeline.memory.dim * max(1, config.encoders.lidar_views) + 16384)
            summary.worker_processes = len(workers.pids)
            total = sum(c.msgcount for c in conns)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="msg", desc="process", leave=False)
            # (connection, log time, raw message | None, where it is | None)
            messages = (((c, t, None, where) for c, t, where in positions) if positions is not None
                        else ((c, t, raw, None) for c, t, raw in reader.messages(connections=conns)))
            # read ahead: (connection, log time, raw | None, where | None, seq, the sensor message's frame to come |
            # None for odometry), or (None, 0, None, None, 0, the read error); at most look_ahead + 1 sensor messages,
            # 4 x look_ahead + 1 in all
            ahead: collections.deque[tuple[Any, int, bytes | None, Any, int, Any]] = collections.deque()
            sensors_ahead = 0
            seqs = itertools.count()
            reading = True
            while True:
                while reading and len(ahead) <= 4 * look_ahead and sensors_ahead <= look_ahead:
                    try:
                        item = next(messages, None)
                    except Exception as err:  # a corrupt chunk or record in the middle of the file
                        ahead.append((None, 0, None, None, 0, err))
                        reading = False
                        break
                    if item is None:
                        reading = False
                        break
                    conn, log_ns, raw, where = item
                    seq = next(seqs)
                    sensor = conn.topic != odom_topic
                    sensors_ahead += sensor
                    ahead.append((conn, log_ns, raw, where, seq, workers.submit(
                        conn.topic, ("load", seq, conn.topic, conn.msgtype, log_ns, where), raw) if sensor else None))
                if not ahead:
                    break
                conn, log_ns, raw, where, seq, loaded = ahead.popleft()
                if conn is None:
                    raise BagError(bags_named, f"unreadable after {summary.messages} messages: {loaded}") from loaded
                sensors_ahead -= loaded is not None
                summary.messages += 1
                first = log_ns if first is None else first
                last = log_ns
                if bar is not None:
                    bar.update(1)
                if conn.topic == odom_topic:
                    if raw is None:
                        try:
                            raw = at.read(where)
                        except BagError as err:
                            raise BagError(bags_named, f"unreadable after {summary.messages} messages: {err}") from err
                    try:
                        msg = reader.deserialize(raw, conn.msgtype)
                    except Exception:  # rosbags raises several untyped errors on corrupt CDR
                        summary.bad_messages += 1
                        continue
                    if pipeline.poses is not None:
                        try:
                            runner.odometry(msg)
                        except CmrFusionError:
                            summary.bad_messages += 1
                    release(log_ns)
                    continue
                got = loaded.result()
                if isinstance(got, Damaged):
                    raise BagError(bags_named, f"unreadable after {summary.messages} messages: {got.problem}")
                if isinstance(got, str):  # UNREADABLE or BAD
                    summary.bad_messages += 1
                    if got == BAD:  # (an unreadable message counts, and is otherwise as if it were not there)
                        release(log_ns)
                    continue
                if got is None:
                    continue  # the other camera transport
                frame_id, stamp_ns, decode_ms, reduction, early = got  # the frame, its data left in the worker
                waiting.append((seq, Frame(topics[conn.topic], conn.topic, frame_id, stamp_ns, None, log_ns, decode_ms,
                                           reduction=reduction), early))
                release(log_ns)
            release(None)
            if workers.forked:  # the merges ran in the workers
                merge_stats = dict.fromkeys(STAT_KEYS, 0)
                for got in [workers.submit(key, ("stats",)) for key in workers.keys]:
                    for key, value in got.result().items():
                        merge_stats[key] += value
            workers.close()
            if writer is not None:  # the trajectory beside the matches (a 3D view in Foxglove)
                summary.copied = writer.copy_from(paths, [t for t in (odom_topic, "/tf", "/tf_static") if t],
                                                  reader=reader)
            if bar is not None:
                bar.close()
    finally:
        if workers is not None:
            workers.close(cancel=True)  # after an error: at once (after the run: they have stopped already)
        guard.close()
        if at is not None:
            at.close()
        if events_file is not None:
            events_file.close()
        if writer is not None:
            writer.close()
        summary.memory_entries = len(pipeline.memory)
        mstats = pipeline.memory.stats()
        summary.memory_skipped_duplicate = mstats.skipped_duplicate
        summary.memory_skipped_capacity = mstats.skipped_capacity
        summary.time_jumps = pipeline.time_jumps
        acc = merge_stats if merge_stats is not None else pipeline.accumulation_stats()
        summary.radar_scans_merged, summary.radar_scans_missing = acc["scans_merged"], acc["scans_missing"]
        summary.radar_scans_without_pose = acc["scans_without_pose"]
        pipeline.close()
    summary.wall_s = time.perf_counter() - t_start
    summary.bag_duration_s = ((last or 0) - (first or 0)) / 1e9
    summary.realtime_factor = summary.bag_duration_s / summary.wall_s if summary.wall_s > 0 else 0.0
    summary.encode_ms = {m: {"p50": _pct(v, 50), "p99": _pct(v, 99)} for m, v in encode.items() if v}
    summary.search_ms = {m: {"p50": _pct(v, 50), "p99": _pct(v, 99)} for m, v in search.items() if v}
    if out is not None:
        (out / "summary.json").write_text(summary.to_json())
    return summary
