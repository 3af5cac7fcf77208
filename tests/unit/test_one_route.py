"""One route from message to embedding: the sample bag through evaluation's embedding (``embed_bag``), offline
processing (``process_bags``, the live node's route) and the training dataset (``frames_from_bag``, its tensors
encoded) gives the same embeddings, within 1e-5, for every frame the three share; all three with the rig-aware inputs
(``core.rig``) and the bag's recorded rig (eval ``--rig canonical``, train ``--rig canonical``, process
``--rig-from-bag``: the sample bag's 16x256 LiDAR is upsampled, its 320x240 camera resampled to the training view)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.bag.offline import process_bags
from cmr_fusion_ros.core.config import FusionConfig
from cmr_fusion_ros.core.encoder import load_encoders
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.rig import RigOptions
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.eval.evaluate import embed_bag
from cmr_fusion_ros.paths import models_dir

REPO = Path(__file__).resolve().parents[2]
BAG = REPO / "bags" / "sample_town" / "session_00"
TOL = 1e-5


@pytest.fixture(scope="module")
def encoders():
    return dict(load_encoders(models_dir(), tuple(Modality), warmup_runs=0))


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_eval_process_and_training_embed_alike(encoders, tmp_path) -> None:
    ev = embed_bag(BAG, encoders, rig=RigOptions())

    # offline processing (the live node's route): record what the pipeline embeds
    cfg = FusionConfig.from_dict({"encoders": {"lidar_views": 1}, "memory": {"admission": {"enabled": False}}})
    pipe = FusionPipeline(cfg, encoders, FusionPipeline.from_config(cfg, load_encoders=False).memory,
                          poses=FusionPipeline.from_config(cfg, load_encoders=False).poses)
    seen: dict[Modality, dict[int, np.ndarray]] = {m: {} for m in Modality}
    run = pipe.run

    def record(job):
        out = run(job)
        seen[out.modality][out.stamp_ns] = out.vector
        return out

    pipe.run = record  # type: ignore[method-assign]
    # look-ahead 0: embedded in this process, where the recording sees it (look-ahead gives the same embeddings,
    # test_offline_look_ahead)
    summary = process_bags([BAG], cfg, pipeline=pipe, progress=False, rig_from_bag=True, look_ahead=0)
    assert summary.bad_messages == 0
    for m in Modality:
        stamps = ev.stamps_ns[m]
        assert len(stamps) > 50 and set(stamps.tolist()) <= set(seen[m])  # every sample with a pose was processed
        worst = max(_close(seen[m][int(t)], v) for t, v in zip(stamps, ev.embeddings[m]))
        assert worst < TOL, f"{m.value}: process and eval differ by {worst}"

    # training: the dataset's tensors through the same encoders; one row per LiDAR scan with the nearest image and
    # radar scan, so each row must equal one of evaluation's embeddings of its modality
    pytest.importorskip("torch")
    from cmr_fusion_ros.training.dataset import frames_from_bag

    frames = frames_from_bag(BAG, {m: e.preprocessing for m, e in encoders.items()}, rig=RigOptions())
    assert len(frames) > 50
    lidar = dict(zip(ev.stamps_ns[Modality.LIDAR].tolist(), ev.embeddings[Modality.LIDAR]))
    for m in Modality:
        vecs = encoders[m].encode_tensors(np.asarray(frames.tensors[m]))
        if m is Modality.LIDAR:
            worst = max(_close(v, lidar[int(t)]) for t, v in zip(frames.stamps_ns, vecs))
        else:
            worst = max(float(np.min(np.max(np.abs(ev.embeddings[m] - v), axis=1))) for v in vecs)
        assert worst < TOL, f"{m.value}: training and eval differ by {worst}"

