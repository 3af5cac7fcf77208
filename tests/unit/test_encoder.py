"""ONNX runtime encoder: config validation, card checks, providers fallback, batching, normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cmr_fusion_ros.core.encoder import (  # noqa: E402
    CARD_FORMAT,
    EncoderConfig,
    ModelCard,
    OnnxEncoder,
    ProviderFallbackWarning,
    card_path,
    file_sha256,
    load_encoders,
    model_path,
)
from cmr_fusion_ros.core.errors import ConfigError, ModelError  # noqa: E402
from cmr_fusion_ros.core.preprocess import CameraPreprocessing, LidarBevPreprocessing  # noqa: E402
from cmr_fusion_ros.core.types import Modality  # noqa: E402


def _tiny_model(path: Path, shape=(3, 8, 16), dim=4, in_name="input", out_name="embedding", batch="batch", seed=0):
    """GlobalAveragePool -> Flatten -> MatMul: embedding = mean over pixels of each channel times W."""
    c = shape[0]
    w = np.random.default_rng(seed).standard_normal((c, dim)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", [in_name], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], [out_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [batch, *shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, dim])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def _card(path: Path, pre, dim=4, **over) -> dict:
    card = ModelCard(
        modality=pre.modality,
        input_name="input",
        input_shape=pre.input_shape,
        output_name="embedding",
        embedding_dim=dim,
        preprocessing=pre.to_dict(),
        sha256=file_sha256(path),
    ).to_dict()
    card.update(over)
    card_path(path).write_text(json.dumps(card))
    return card


@pytest.fixture
def camera_model(tmp_path: Path):
    pre = CameraPreprocessing(width=16, height=8)
    path = model_path(tmp_path, Modality.CAMERA)
    w = _tiny_model(path, shape=pre.input_shape)
    _card(path, pre)
    return path, pre, w


def test_encode_matches_numpy_and_is_normalised(camera_model) -> None:
    path, pre, w = camera_model
    enc = OnnxEncoder(EncoderConfig(str(path), batch_size=3))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (30, 50, 3), dtype=np.uint8) for _ in range(7)]
    out = enc.encode(imgs)
    x = np.stack([pre(i) for i in imgs])
    ref = x.mean(axis=(2, 3)) @ w
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert out.shape == (7, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert enc.modality is Modality.CAMERA and enc.encode([]).shape == (0, 4)
    with pytest.raises(ModelError, match="input of shape"):
        enc.encode_tensors(np.zeros((1, 3, 9, 16), np.float32))


def test_unavailable_provider_falls_back_to_cpu_with_warning(camera_model) -> None:
    path, _, _ = camera_model
    with pytest.warns(ProviderFallbackWarning, match="TensorrtExecutionProvider"):
        enc = OnnxEncoder(EncoderConfig(str(path), providers=("TensorrtExecutionProvider", "CPUExecutionProvider")))
    assert enc.providers == ("CPUExecutionProvider",) and enc.fallback == ("TensorrtExecutionProvider",)


def test_load_encoders_warns_once_for_all_and_says_what_runs() -> None:
    """A CUDA request on an onnxruntime without it (this machine): one warning naming the provider, every encoder
    and the fix; each encoder on the CPU; the providers in use as the nodes log and publish them."""
    import warnings

    import onnxruntime as ort

    from cmr_fusion_ros.core.encoder import load_encoders, providers_in_use
    from cmr_fusion_ros.paths import models_dir

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback needs a machine without it")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encs = load_encoders(models_dir(), providers=("CUDAExecutionProvider", "CPUExecutionProvider"), warmup_runs=0)
    fallback = [w for w in caught if issubclass(w.category, ProviderFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in fallback]
    text = str(fallback[0].message)
    assert "CUDAExecutionProvider" in text and ".[gpu]" in text and all(m.value in text for m in Modality)
    assert all(e.providers == ("CPUExecutionProvider",) for e in encs.values())
    assert providers_in_use(encs) == "camera: CPUExecutionProvider; lidar: CPUExecutionProvider; radar: CPUExecutionProvider"
    with warnings.catch_warnings(record=True) as caught:  # CPU only, as configured: nothing to say
        warnings.simplefilter("always")
        load_encoders(models_dir(), [Modality.RADAR], warmup_runs=0)
    assert not [w for w in caught if issubclass(w.category, ProviderFallbackWarning)]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"providers": ("FooExecutionProvider",)}, "providers"),
        ({"providers": ()}, "providers"),
        ({"intra_op_threads": -1}, "intra_op_threads"),
        ({"batch_size": 0}, "batch_size"),
        ({"warmup_runs": 1.5}, "warmup_runs"),
        ({"verify_sha256": "yes"}, "verify_sha256"),
    ],
)
def test_config_validation_names_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError, match=key):
        EncoderConfig("m.onnx", **kwargs)


def test_missing_model_or_card(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="file not found"):
        OnnxEncoder(EncoderConfig(str(tmp_path / "none.onnx")))
    path = tmp_path / "m.onnx"
    _tiny_model(path)
    with pytest.raises(ModelError, match="no model card"):
        OnnxEncoder(EncoderConfig(str(path)))


@pytest.mark.parametrize(
    "model_kw, card_kw, match",
    [
        ({"in_name": "image"}, {}, "input is named 'image'"),
        ({"out_name": "feat"}, {}, "output is named 'feat'"),
        ({"dim": 5}, {}, r"output shape .* \[batch, 4\]"),
        ({"shape": (3, 8, 8)}, {}, "input shape"),
        ({"batch": 1}, {}, "dynamic batch"),
    ],
)
def test_graph_not_matching_card_raises(tmp_path: Path, model_kw, card_kw, match) -> None:
    pre = CameraPreprocessing(width=16, height=8)
    path = tmp_path / "m.onnx"
    _tiny_model(path, **model_kw)
    _card(path, pre, **card_kw)
    with pytest.raises(ModelError, match=match):
        OnnxEncoder(EncoderConfig(str(path)))


def test_bad_cards(tmp_path: Path) -> None:
    pre = CameraPreprocessing(width=16, height=8)
    path = tmp_path / "m.onnx"
    _tiny_model(path)
    _card(path, pre, format="other/1")
    with pytest.raises(ModelError, match="card format"):
        OnnxEncoder(EncoderConfig(str(path)))
    card = _card(path, pre)
    card["preprocessing"] = LidarBevPreprocessing().to_dict()
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="preprocessing is for lidar"):
        OnnxEncoder(EncoderConfig(str(path)))
    card = _card(path, pre)
    card["input"]["shape"] = ["batch", 3, 9, 16]
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="preprocessing gives"):
        OnnxEncoder(EncoderConfig(str(path)))
    card_path(path).write_text("{not json")
    with pytest.raises(ModelError, match="unreadable card"):
        OnnxEncoder(EncoderConfig(str(path)))


def test_sha_mismatch_detected(camera_model) -> None:
    path, pre, _ = camera_model
    _tiny_model(path, shape=pre.input_shape, seed=5)  # new weights, old card
    with pytest.raises(ModelError, match="sha256"):
        OnnxEncoder(EncoderConfig(str(path)))
    assert OnnxEncoder(EncoderConfig(str(path), verify_sha256=False)).dim == 4


def test_load_encoders_from_folder(camera_model) -> None:
    path, _, _ = camera_model
    encs = load_encoders(path.parent, [Modality.CAMERA], warmup_runs=0)
    assert list(encs) == [Modality.CAMERA]
    with pytest.raises(ModelError, match="lidar_encoder.onnx"):
        load_encoders(path.parent, ["lidar"])
