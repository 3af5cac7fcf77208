"""The scene-memory services shared by fusion_node and memory_node: save, clear, query top-k."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from rclpy.node import Node

from cmr_fusion_msgs.srv import ClearMemory, QueryMemory, SaveMemory
from cmr_fusion_ros.core.errors import CmrFusionError
from cmr_fusion_ros.core.memory.entry import Neighbor
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.policy import MatchResult, Query
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.messages import match_event

__all__ = ["add_memory_services"]


def add_memory_services(node: Node, pipeline: FusionPipeline) -> None:
    """``~/save_memory`` (flush + snapshot, optionally copied to a path), ``~/clear_memory`` (all or some
    modalities; the policy forgets its revisits), ``~/query_memory`` (top-k by embedding)."""

    def on_save(req: SaveMemory.Request, res: SaveMemory.Response) -> SaveMemory.Response:
        mem = pipeline.memory
        try:
            left = mem.flush()
            if mem.config.store == "postgres":  # the database is the durable copy: writing the queue is saving
                if left:
                    raise CmrFusionError(f"{left} entries still queued: the memory database is unreachable")
                res.success, res.entries = True, len(mem)
                res.message = f"all entries written to the memory database ({len(mem)} entries)"
                return res
            if mem.directory is None:
                raise CmrFusionError("memory.persistence.directory is '' (RAM only): nothing to save to")
            mem.snapshot()
            if req.path and Path(req.path).resolve() != mem.directory.resolve():
                target = Path(req.path)
                if target.exists() and any(target.iterdir()):
                    raise CmrFusionError(f"{target} exists and is not empty")
                shutil.copytree(mem.directory, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.lock"))
            res.success, res.entries = True, len(mem)
            res.message = f"saved {len(mem)} entries to {req.path or mem.directory}"
        except (CmrFusionError, OSError) as err:
            res.success, res.message = False, str(err)
        return res

    def on_clear(req: ClearMemory.Request, res: ClearMemory.Response) -> ClearMemory.Response:
        try:
            mods = [Modality.parse(m) for m in req.modalities] or None
            res.removed = pipeline.memory.clear(mods)
            pipeline.policy.reset()
            res.success, res.message = True, f"removed {res.removed} entries"
        except CmrFusionError as err:
            res.success, res.message = False, str(err)
        return res

    def on_query(req: QueryMemory.Request, res: QueryMemory.Response) -> QueryMemory.Response:
        try:
            mods = tuple(Modality.parse(m) for m in req.modalities) or tuple(Modality)
            found: list[Neighbor] = pipeline.memory.search(np.asarray(req.vector, np.float32), max(1, req.k),
                                                                modalities=mods, min_score=float(req.min_score))
            q = Query(Modality.CAMERA, "", 0, "", np.zeros(1, np.float32), pose_frame_id=pipeline.pose_frame_id)
            res.matches = [match_event(MatchResult.of(q, n)) for n in found]
            for e in res.matches:
                e.query_modality = ""
            res.success, res.message = True, f"{len(found)} neighbours"
        except CmrFusionError as err:
            res.success, res.message = False, str(err)
        return res

    node.create_service(SaveMemory, "~/save_memory", on_save)
    node.create_service(ClearMemory, "~/clear_memory", on_clear)
    node.create_service(QueryMemory, "~/query_memory", on_query)
