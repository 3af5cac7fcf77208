"""Record simulated sessions as rosbag2 directories: ``<out>/session_00/``, ``<out>/session_01/``, ... + ``town.json``.

Topics (header.frame_id = the sensor frame; header stamps = bag timestamps = sim time from the session's epoch):

======================== ============================ ====================================================
topic                    type                         content
======================== ============================ ====================================================
/camera/image/compressed sensor_msgs/CompressedImage  JPEG; ``--raw-images``: /camera/image, Image rgb8
/camera/camera_info      sensor_msgs/CameraInfo       pinhole K, no distortion, one per image
/lidar/points            sensor_msgs/PointCloud2      x, y, z, intensity float32; ring uint16
/radar/points            sensor_msgs/PointCloud2      x, y, z, doppler, rcs float32
/odom                    nav_msgs/Odometry            odom -> base_link pose, twist in base_link
/tf                      tf2_msgs/TFMessage           odom -> base_link, at the odometry rate
/tf_static               tf2_msgs/TFMessage           base_link -> lidar, radar, camera_optical_frame (once)
======================== ============================ ====================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr_fusion_ros.bag.writer import (
    BagWriter,
    camera_info_msg,
    cloud_msg,
    compressed_image_msg,
    image_msg,
    odometry_msg,
    tf_message,
    transform_msg,
)
from cmr_fusion_ros.core.errors import BagError
from cmr_fusion_ros.sim.config import SimConfig
from cmr_fusion_ros.sim.geometry import quat_from_yaw
from cmr_fusion_ros.sim.sensors import CAMERA_FRAME, LIDAR_FRAME, RADAR_FRAME
from cmr_fusion_ros.sim.rig import rig_summary
from cmr_fusion_ros.sim.session import SensorKind, SessionPlan, plan_session, simulate_session
from cmr_fusion_ros.sim.town import Town, generate_town

__all__ = ["ODOM_FRAME", "BASE_FRAME", "TOPICS", "RecordResult", "record_session", "session_dir", "simulate_dataset"]

ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
TOPICS = {
    "camera_compressed": "/camera/image/compressed",
    "camera_raw": "/camera/image",
    "camera_info": "/camera/camera_info",
    "lidar": "/lidar/points",
    "radar": "/radar/points",
    "odom": "/odom",
    "tf": "/tf",
    "tf_static": "/tf_static",
}


@dataclass(frozen=True)
class RecordResult:
    path: Path
    counts: dict[str, int]
    sim_seconds: float
    wall_seconds: float


def session_dir(out: Path, session: int) -> Path:
    return Path(out) / f"session_{session:02d}"


def record_session(plan: SessionPlan, path: Path, *, storage: str = "mcap", raw_images: bool = False,
                   progress: Callable[[int], None] | None = None) -> RecordResult:
    """Render `plan` into a bag at `path`. `progress(n)` is called with the number of samples done since last call."""
    start = time.perf_counter()
    cfg = plan.config
    with BagWriter(path, storage=storage) as bag:
        ts = bag.typestore
        cam_topic = TOPICS["camera_raw"] if raw_images else TOPICS["camera_compressed"]
        bag.add_topic(TOPICS["tf_static"], "tf2_msgs/msg/TFMessage", latched=True)
        for topic, msgtype in ((cam_topic, "sensor_msgs/msg/Image" if raw_images else "sensor_msgs/msg/CompressedImage"),
                               (TOPICS["camera_info"], "sensor_msgs/msg/CameraInfo"),
                               (TOPICS["lidar"], "sensor_msgs/msg/PointCloud2"),
                               (TOPICS["radar"], "sensor_msgs/msg/PointCloud2"),
                               (TOPICS["odom"], "nav_msgs/msg/Odometry"),
                               (TOPICS["tf"], "tf2_msgs/msg/TFMessage")):
            bag.add_topic(topic, msgtype)
        statics = [transform_msg(ts, plan.epoch_ns, BASE_FRAME, frame, ext.translation, ext.quat)
                   for frame, ext in plan.extrinsics.items()]
        bag.write(TOPICS["tf_static"], plan.epoch_ns, tf_message(ts, statics))
        K = plan.camera.K
        for sample in simulate_session(plan):
            st, stamp = sample.state, sample.stamp_ns
            if sample.kind == SensorKind.ODOM:
                q = quat_from_yaw(st.yaw)
                bag.write(TOPICS["odom"], stamp, odometry_msg(ts, stamp, ODOM_FRAME, BASE_FRAME, (st.x, st.y, 0.0), q,
                                                              (st.speed, 0.0, 0.0), (0.0, 0.0, st.yaw_rate)))
                bag.write(TOPICS["tf"], stamp,
                          tf_message(ts, [transform_msg(ts, stamp, ODOM_FRAME, BASE_FRAME, (st.x, st.y, 0.0), q)]))
            elif sample.kind == SensorKind.CAMERA:
                if raw_images:
                    bag.write(cam_topic, stamp, image_msg(ts, stamp, CAMERA_FRAME, sample.data, "rgb8"))
                else:
                    bag.write(cam_topic, stamp, compressed_image_msg(ts, stamp, CAMERA_FRAME, sample.data, "rgb8",
                                                                     cfg.camera.jpeg_quality))
                bag.write(TOPICS["camera_info"], stamp,
                          camera_info_msg(ts, stamp, CAMERA_FRAME, cfg.camera.width, cfg.camera.height, K))
            elif sample.kind == SensorKind.LIDAR:
                bag.write(TOPICS["lidar"], stamp, cloud_msg(ts, stamp, LIDAR_FRAME, sample.data))
            else:
                bag.write(TOPICS["radar"], stamp, cloud_msg(ts, stamp, RADAR_FRAME, sample.data))
            if progress is not None:
                progress(1)
        counts = dict(bag.counts)
    return RecordResult(Path(path), counts, plan.duration, time.perf_counter() - start)


def _town_record(town: Town, config: SimConfig, duration: float, sessions: int, storage: str, raw_images: bool,
                 plans: list[SessionPlan]) -> dict:
    summary = town.summary()
    summary["generator"] = "cmr-fusion simulate"
    summary["duration"] = duration
    summary["sessions"] = [
        {
            "session": p.session,
            "directory": session_dir(Path("."), p.session).name,
            "epoch_ns": p.epoch_ns,
            "lighting": p.world.lighting.name,
            "sun_direction": [round(v, 5) for v in p.world.lighting.sun_direction],
            "loop_length_m": round(p.loop.length, 3),
            "loop_streets": list(p.loop.blocks),
            "start_s_m": round(p.speed.s0, 3),
            "speed_mps": round(p.speed.v0, 4),
            **({"rig": rig_summary(p.config)} if config.rig.draw else {}),
        }
        for p in plans
    ]
    summary["storage"] = storage
    summary["raw_images"] = raw_images
    summary["sim_config"] = config.to_dict()
    return summary


def _one(args: tuple) -> RecordResult:
    seed, session, duration, config, out, storage, raw_images = args
    plan = plan_session(seed, session, duration, config)
    return record_session(plan, session_dir(out, session), storage=storage, raw_images=raw_images)


def simulate_dataset(out: str | Path, *, seed: int, duration: float, sessions: int, config: SimConfig | None = None,
                     storage: str = "mcap", raw_images: bool = False, jobs: int = 1,
                     progress: Callable[[int], None] | None = None) -> tuple[dict, list[RecordResult]]:
    """Write `sessions` bags of the same town into `out`, plus ``town.json``. Returns (town record, results).

    `progress(n)` receives sample counts as they are rendered (with jobs > 1: whole sessions at a time).
    """
    cfg = config or SimConfig()
    out = Path(out)
    if sessions < 1:
        raise BagError(str(out), f"sessions must be >= 1, got {sessions}")
    for k in range(sessions):
        if session_dir(out, k).exists():
            raise BagError(str(session_dir(out, k)), "already exists; choose an empty --out directory")
    out.mkdir(parents=True, exist_ok=True)
    town = generate_town(seed, cfg.town)
    plans = [plan_session(seed, k, duration, cfg, town) for k in range(sessions)]
    record = _town_record(town, cfg, duration, sessions, storage, raw_images, plans)
    (out / "town.json").write_text(json.dumps(record, indent=1) + "\n")
    from cmr_fusion_ros.sim.plot import plot_town

    plot_town(plans, out / "town.png")
    results: list[RecordResult] = []
    if jobs <= 1 or sessions == 1:
        for plan in plans:
            results.append(record_session(plan, session_dir(out, plan.session), storage=storage,
                                          raw_images=raw_images, progress=progress))
    else:
        import multiprocessing as mp

        del plans  # workers rebuild their plan (worlds hold open3d scenes, which do not pickle)
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(jobs, sessions)) as pool:
            args = [(seed, k, duration, cfg, out, storage, raw_images) for k in range(sessions)]
            for res in pool.imap(_one, args):
                results.append(res)
                if progress is not None:
                    progress(sum(res.counts.values()) - res.counts.get(TOPICS["camera_info"], 0)
                             - res.counts.get(TOPICS["tf"], 0) - res.counts.get(TOPICS["tf_static"], 0))
    return record, results


def total_samples(config: SimConfig, duration: float, sessions: int) -> int:
    """How many samples (odom + lidar + camera + radar) a dataset has: the progress bar's total."""
    n = 0
    for rate in (config.odom.rate_hz, config.lidar.rate_hz, config.camera.rate_hz, config.radar.rate_hz):
        n += int(np.floor(duration * rate + 1e-6))
    return n * sessions
