"""Open the scene memory that ``memory.store`` names: a local folder or the fleet's PostgreSQL database."""

from __future__ import annotations

import dataclasses
import os

from cmr_fusion_ros.core.memory.config import MemoryConfig, resolve_robot_id
from cmr_fusion_ros.core.memory.scene import SceneMemory

__all__ = ["open_memory"]


def open_memory(config: MemoryConfig, directory: str | os.PathLike | None = None, *, namespace: str = ""):
    """``SceneMemory`` (``memory.store: local``; in ``directory``, else ``memory.persistence.directory``, else RAM)
    or ``PostgresMemory`` (``memory.store: postgres``). ``memory.robot_id`` '' becomes the node's ``namespace``
    (else the host name) here, so every entry and match event names a robot."""
    config = dataclasses.replace(config, robot_id=resolve_robot_id(config.robot_id, namespace))
    if config.store == "postgres":
        from cmr_fusion_ros.core.memory.postgres import PostgresMemory

        return PostgresMemory(config)
    if directory is None:
        directory = config.persistence.directory
    directory = os.path.expanduser(os.fspath(directory)) if directory else ""
    return SceneMemory.open(directory, config) if directory else SceneMemory(config)
