"""A bag's sensor rig for the rig-aware inputs (:mod:`cmr_fusion_ros.core.rig`): mounts from ``/tf_static``, the
camera's intrinsics from its ``CameraInfo``.

Each sensor's frame is the ``header.frame_id`` of its first message; its mount is the chain of static transforms from
``base_frame`` to that frame. The camera's ``CameraInfo`` is looked for beside the image topic (``/cam/image`` and
``/cam/image/compressed`` -> ``/cam/camera_info``). What the bag does not hold stays None, and the adapter skips the
steps that need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cmr_fusion_ros.bag.reader import BagTopics, _open
from cmr_fusion_ros.core.rig import CameraIntrinsics, SensorMount, SensorRig
from cmr_fusion_ros.core.types import Modality

__all__ = ["camera_info_topic", "read_rig", "rig_of_topics", "static_mounts"]

TF_STATIC = "/tf_static"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic that goes with an image topic (image_transport's naming)."""
    parts = image_topic.rstrip("/").split("/")
    if parts and parts[-1] in ("compressed", "theora", "compressedDepth"):
        parts = parts[:-1]
    return "/".join(parts[:-1] + ["camera_info"])


def static_mounts(transforms: list[tuple[str, str, SensorMount]], base_frame: str) -> dict[str, SensorMount]:
    """``base_frame <- frame`` for every frame reachable from ``base_frame`` through ``(parent, child, parent <-
    child)`` transforms (frame ids compared without a leading '/')."""
    children: dict[str, list[tuple[str, SensorMount]]] = {}
    for parent, child, m in transforms:
        children.setdefault(parent.lstrip("/"), []).append((child.lstrip("/"), m))
    out: dict[str, SensorMount] = {base_frame.lstrip("/"): SensorMount()}
    todo = [base_frame.lstrip("/")]
    while todo:
        frame = todo.pop()
        for child, m in children.get(frame, ()):
            if child not in out:
                out[child] = out[frame].compose(m)
                todo.append(child)
    return out


def _mount(tf: Any) -> SensorMount:
    t, q = tf.transform.translation, tf.transform.rotation
    return SensorMount((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def read_rig(path: str | Path, topics: BagTopics | None = None, base_frame: str = "base_link") -> SensorRig:
    """The rig recorded in a bag (see the module text)."""
    topics = topics or BagTopics()
    reader = _open(path)
    try:
        present = {c.topic: c for c in reader.connections}
        transforms: list[tuple[str, str, SensorMount]] = []
        if TF_STATIC in present:
            for conn, _, raw in reader.messages(connections=[present[TF_STATIC]]):
                for tf in reader.deserialize(raw, conn.msgtype).transforms:
                    transforms.append((str(tf.header.frame_id), str(tf.child_frame_id), _mount(tf)))
        mounts = static_mounts(transforms, base_frame)
        camera_topic = next((t for t in topics.camera if t in present), None)
        frames: dict[str, str] = {}
        for key, topic in (("camera", camera_topic), ("lidar", topics.lidar), ("radar", topics.radar)):
            if topic in present:
                conn = present[topic]
                for _, _, raw in reader.messages(connections=[conn]):
                    frames[key] = str(reader.deserialize(raw, conn.msgtype).header.frame_id).lstrip("/")
                    break
        intrinsics = None
        info = camera_info_topic(camera_topic) if camera_topic else None
        if info in present and present[info].msgtype == CAMERA_INFO:
            for conn, _, raw in reader.messages(connections=[present[info]]):
                intrinsics = CameraIntrinsics.from_camera_info(reader.deserialize(raw, conn.msgtype))
                break
    finally:
        reader.close()
    return SensorRig(
        camera_mount=mounts.get(frames.get("camera", "")),
        camera=intrinsics,
        lidar_mount=mounts.get(frames.get("lidar", "")),
        radar_mount=mounts.get(frames.get("radar", "")),
    )


def rig_of_topics(path: str | Path, topics: dict[Modality, str], base_frame: str = "base_link") -> SensorRig:
    """:func:`read_rig` for the sensor topics of a node configuration (modality -> absolute topic)."""
    d = BagTopics()
    cam = topics.get(Modality.CAMERA)
    return read_rig(path, BagTopics(camera=(cam,) if cam else d.camera, lidar=topics.get(Modality.LIDAR, d.lidar),
                                    radar=topics.get(Modality.RADAR, d.radar)), base_frame)
