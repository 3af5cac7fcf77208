"""Frame -> embedding: the one route of the live pipeline, the split ``encoder_node``, evaluation and training.

One :class:`FrameEmbedder` per stream (one topic) takes each decoded frame in order (decoded at no more than
:attr:`FrameEmbedder.decode_size`, which every caller passes to the decoder) through

0. **rig**: the sensor's data brought to the canonical rig the models were trained on, when the stream has a
   :class:`~cmr_fusion_ros.core.rig.RigAdapter` (``rig.*``; a camera's intrinsics scaled by the frame's JPEG
   ``reduction``);
1. **merge**: a multi-scan radar model (``scans > 1`` on its card) merges the frame with the stream's earlier scans,
   moved into the frame's pose by the odometry (:class:`~cmr_fusion_ros.core.accumulate.ScanAccumulator`);
2. **views**: a LiDAR scan may also be seen turned to other headings (``views`` > 1,
   :func:`~cmr_fusion_ros.core.preprocess.turned_views`);
3. **preprocess**: the card's preprocessing, giving a ``(views, C, H, W)`` tensor (:meth:`FrameEmbedder.tensors`;
   training stops here and stores the tensors);
4. **encode**: the ONNX encoder, L2-normalised vectors (:meth:`FrameEmbedder.encode`; evaluation batches tensors of
   many frames into one call).

:meth:`FrameEmbedder.embed` runs all steps for one frame and times steps 0-3 apart from step 4. The frame's
``sensor`` (:class:`~cmr_fusion_ros.core.decode.SensorInfo`) reaches :meth:`FrameEmbedder.tensors`. Not
thread-safe: one stream, one caller at a time (each stream has its own embedder).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cmr_fusion_ros.core.accumulate import STAT_KEYS, ScanAccumulator
from cmr_fusion_ros.core.preprocess import Preprocessing, accumulator_for, turned_views
from cmr_fusion_ros.core.rig import RigAdapter
from cmr_fusion_ros.core.types import Pose

__all__ = ["Embedded", "Encoder", "FrameEmbedder", "FrameLike", "decode_size"]


class Encoder(Protocol):
    """What the pipeline needs of an encoder: its embedding size and ``encode`` (raw inputs -> vectors). ONNX
    encoders also offer ``preprocessing`` and ``encode_tensors`` (tensors -> vectors), which the route uses."""

    dim: int

    def encode(self, items: Sequence[np.ndarray]) -> np.ndarray: ...


class FrameLike(Protocol):
    """A decoded frame (:class:`~cmr_fusion_ros.core.decode.Frame`, or a bag reader's ``SensorSample``)."""

    stamp_ns: int
    data: Any
    reduction: int  # a camera JPEG decoded at 1/reduction of its size


@dataclass(frozen=True, slots=True)
class Embedded:
    """One frame's embedding: ``vector`` (D,), ``views`` (views - 1, D) or None, and the time (ms) spent merging and
    preprocessing, and in the network."""

    vector: np.ndarray = field(repr=False)
    views: np.ndarray | None = field(default=None, repr=False)
    preprocess_ms: float = 0.0
    encode_ms: float = 0.0


DECODE_MARGIN = 2  # a JPEG is decoded at no less than twice the camera input, so the area resize still averages


def decode_size(preprocessing: Any) -> tuple[int, int] | None:
    """(width, height) a camera image need not be decoded larger than: twice the preprocessing's input (decoding
    right down to the input size, then resizing by a few percent, cost camera recall@1 1-3 points on the town-999
    evaluation with the shipped models); None for other modalities."""
    if getattr(getattr(preprocessing, "modality", None), "value", None) != "camera":
        return None
    return DECODE_MARGIN * int(preprocessing.width), DECODE_MARGIN * int(preprocessing.height)


class FrameEmbedder:
    """The route of one stream (see the module doc). ``encoder`` may be None (training: tensors only); an encoder
    without ``preprocessing``/``encode_tensors`` (a test double) gets the merged data through ``encode``."""

    def __init__(self, preprocessing: Preprocessing | None, encoder: Encoder | None = None, *,
                 clock: Callable[[], float] = time.perf_counter, adapter: RigAdapter | None = None) -> None:
        self.preprocessing = preprocessing
        self.encoder = encoder
        self.adapter = adapter  # step 0: this sensor's data -> the canonical rig's (None: as it is)
        self.accumulator: ScanAccumulator | None = accumulator_for(preprocessing)
        self._clock = clock
        self._stale = False  # reset() asked for: done by the stream's own thread before its next merge

    @classmethod
    def of(cls, encoder: Encoder, *, clock: Callable[[], float] = time.perf_counter,
           adapter: RigAdapter | None = None) -> "FrameEmbedder":
        """The route of ``encoder`` (its card's preprocessing), with the stream's rig ``adapter`` if any."""
        return cls(getattr(encoder, "preprocessing", None), encoder, clock=clock, adapter=adapter)

    @property
    def decode_size(self) -> tuple[int, int] | None:
        """(width, height) a JPEG need not be decoded larger than (:func:`decode_size`; passed as
        :func:`cmr_fusion_ros.core.decode.frame_from`'s ``min_size``); None for other modalities."""
        return decode_size(self.preprocessing)

    @property
    def multi_scan(self) -> bool:
        """True when the model merges several scans (it needs the odometry)."""
        return self.accumulator is not None

    def reset(self) -> None:
        """A new time line: forget the merged scans before the next frame (safe from another thread: the pipeline's
        next ``prepare`` of this stream takes the request, :meth:`take_reset`, and its ``run`` clears the history)."""
        self._stale = True

    def take_reset(self) -> bool:
        """Whether a reset was asked for since the last call (and forget that it was)."""
        stale, self._stale = self._stale, False
        return stale

    def clear_history(self) -> None:
        """Forget the merged scans now (the stream's own thread)."""
        if self.accumulator is not None:
            self.accumulator.reset()

    def stats(self) -> dict[str, int]:
        """Multi-scan merging: earlier scans merged, wanted but not found, scans without a pose (zeros otherwise)."""
        return self.accumulator.stats() if self.accumulator is not None else dict.fromkeys(STAT_KEYS, 0)

    def merge(self, frame: FrameLike, pose: Pose | None) -> Any:
        """Steps 0-1: the frame's data at the canonical rig, merged with the stream's earlier scans when the model wants
        several."""
        data = frame.data if self.adapter is None else self.adapter(frame.data, frame.reduction)
        if self.accumulator is None:
            return data
        return self.accumulator.merge(frame.stamp_ns, data, pose)

    def tensors(self, frame: FrameLike, pose: Pose | None, views: int = 1) -> np.ndarray:
        """Steps 0-3: ``(views, C, H, W)`` float32 (view 0 is the frame as it is). Call once per frame, in stream
        order (merging keeps the stream's history)."""
        if self.preprocessing is None:
            raise TypeError("FrameEmbedder.tensors needs a preprocessing")
        data = self.merge(frame, pose)
        if views > 1:
            return turned_views(self.preprocessing, data, views)
        return self.preprocessing(data)[None]

    def encode(self, tensors: np.ndarray) -> np.ndarray:
        """Step 4: ``(N, C, H, W)`` -> ``(N, D)`` L2-normalised vectors."""
        return self.encoder.encode_tensors(tensors)  # type: ignore[union-attr]

    def embed(self, frame: FrameLike, pose: Pose | None, views: int = 1) -> Embedded:
        """Steps 0-4 for one frame."""
        t0 = self._clock()
        if self.preprocessing is not None and hasattr(self.encoder, "encode_tensors"):
            x = self.tensors(frame, pose, views)
            t1 = self._clock()
            out = self.encode(x)
            t2 = self._clock()
            return Embedded(out[0], out[1:] if views > 1 else None, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
        vec = self.encoder.encode([self.merge(frame, pose)])[0]  # type: ignore[union-attr]
        return Embedded(vec, None, 0.0, (self._clock() - t0) * 1e3)
