"""Tiny ONNX encoders (global average pool -> matmul + bias) with valid cards for all three modalities, for smoke tests of
the benchmarks: they load through OnnxEncoder and cost next to nothing, so a test measures plumbing, not a network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cmr_fusion_ros.core.encoder import ModelCard, card_path, file_sha256, model_path
from cmr_fusion_ros.core.preprocess import default_preprocessing
from cmr_fusion_ros.core.types import Modality


def write_tiny_models(folder: Path, dim: int = 256, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    for k, m in enumerate(Modality):
        pre = default_preprocessing(m)
        shape = tuple(pre.input_shape)
        rng = np.random.default_rng(seed + k)
        w = rng.standard_normal((shape[0], dim)).astype(np.float32)
        b = rng.standard_normal(dim).astype(np.float32)  # never a zero embedding, even for an empty input
        graph = helper.make_graph(
            [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["projected"]),
             helper.make_node("Add", ["projected", "B"], ["embedding"])],
            f"tiny_{m.value}",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *shape])],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
            initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = model_path(folder, m)
        onnx.save(model, str(path))
        card = ModelCard(modality=m, input_name="input", input_shape=shape, output_name="embedding",
                         embedding_dim=dim, preprocessing=pre.to_dict(), sha256=file_sha256(path))
        card_path(path).write_text(json.dumps(card.to_dict()))
    return folder
