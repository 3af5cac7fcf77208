"""Moving memories between a local memory folder and a PostgreSQL memory (``cmr-fusion memory export|import``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Iterator

from cmr_fusion_ros.core.errors import MemoryStoreError
from cmr_fusion_ros.core.memory import persist
from cmr_fusion_ros.core.memory.config import MemoryConfig
from cmr_fusion_ros.core.memory.entry import MemoryEntry
from cmr_fusion_ros.core.memory.scene import SceneMemory

__all__ = ["export_to_folder", "import_from_folder"]

_LOW = (1 << 32) - 1


def _pg(config: MemoryConfig, robot: str):
    from cmr_fusion_ros.core.memory.postgres import PostgresMemory

    return PostgresMemory(dataclasses.replace(config, store="postgres", robot_id=robot or config.robot_id or "import"))


def import_from_folder(folder: str | os.PathLike, config: MemoryConfig, robot: str) -> tuple[int, int]:
    """Upload a local memory folder (a robot's drive) into the PostgreSQL memory of ``config`` as ``robot``.

    Ids: a local memory's own ids (< 2**32) become ``block << 32 | id`` with a fresh writer block, so the low 32
    bits stay the local id and two robots' uploads never collide; ids >= 2**32 (entries that came from the fleet
    store) are kept as they are, and importing them twice stores them once. Returns (entries, id block)."""
    manifest = persist.read_manifest(Path(folder))
    local_cfg = dataclasses.replace(config, dim=manifest.dim, store="local")
    with SceneMemory.open(folder, local_cfg, read_only=True) as local, \
            _pg(dataclasses.replace(config, dim=manifest.dim), robot) as pgm:
        block = pgm._block
        n = 0
        batch: list[MemoryEntry] = []
        for e in local.entries():
            eid = e.id if e.id > _LOW else (block << 32 | e.id)
            batch.append(dataclasses.replace(e, id=eid, robot=pgm.robot))
            if len(batch) >= 5000:
                pgm.insert_entries(batch)
                n += len(batch)
                batch = []
        pgm.insert_entries(batch)
        n += len(batch)
        left = pgm.flush(timeout_s=600)
        if left:
            raise MemoryStoreError("import", f"{left} entries were not written (database away?)")
    return n, block


def _only(entries: Iterable[MemoryEntry], robot: str) -> Iterator[MemoryEntry]:
    robots: set[str] = set()
    for e in entries:
        if robot and e.robot != robot:
            continue
        robots.add(e.robot)
        if len(robots) > 1:
            raise MemoryStoreError("export", f"entries of several robots ({', '.join(sorted(robots))}): a local "
                                             "memory holds one robot's; choose one with --robot")
        yield e


def export_to_folder(config: MemoryConfig, folder: str | os.PathLike, robot: str = "") -> int:
    """Download the PostgreSQL memory (one robot's entries) into a new local memory folder; ids, modality, stamps,
    poses, topics, frames and sessions kept (the folder's robot is ``memory.robot_id`` when it is used)."""
    from cmr_fusion_ros.core.memory.scene import never_created

    if not never_created(folder):
        raise MemoryStoreError(os.fspath(folder), "exists and is not empty: export into a new folder")
    with _pg(config, robot) as pgm:
        with SceneMemory.open(folder, dataclasses.replace(config, store="local", robot_id=robot)) as local:
            return local.add_entries(_only(pgm.iter_entries(), robot))
