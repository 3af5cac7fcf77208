"""Training side: loss and masks on hand-made cases, the training/runtime preprocessing identity, a tiny training
run on a bag, checkpoint round trip, ONNX export parity (golden test) for fresh and for the shipped models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cmr_fusion_ros.bag.reader import read_samples  # noqa: E402
from cmr_fusion_ros.core.encoder import EncoderConfig, OnnxEncoder, load_card, model_path  # noqa: E402
from cmr_fusion_ros.core.errors import BagError, ConfigError, ModelError  # noqa: E402
from cmr_fusion_ros.core.preprocess import (  # noqa: E402
    CameraPreprocessing,
    LidarBevFrontPreprocessing,
    LidarBevPreprocessing,
    RadarBevPreprocessing,
    mirror,
    preprocessing_from_dict,
)
from cmr_fusion_ros.core.types import Modality  # noqa: E402
from cmr_fusion_ros.paths import models_dir  # noqa: E402
from cmr_fusion_ros.training.dataset import MODALITIES, FrameSet, frames_from_bag, load_frames  # noqa: E402
from cmr_fusion_ros.training.export import PARITY_TOLERANCE, export_all, parity_inputs  # noqa: E402
from cmr_fusion_ros.training.models import (  # noqa: E402
    build_encoder,
    checkpoint_path,
    load_checkpoint,
    resize_input,
    save_checkpoint,
)
from cmr_fusion_ros.training.train import (  # noqa: E402
    Trainer,
    TrainConfig,
    _augment,
    info_nce_multi,
    mirror_batch,
    pair_masks,
)
from tests.unit.test_bag_reader import write_bag  # noqa: E402  (helper beside this file)

SMALL = {
    Modality.CAMERA: CameraPreprocessing(width=32, height=24),
    Modality.LIDAR: LidarBevPreprocessing(rows=32, cols=32, x_min_m=-8, x_max_m=8, y_half_m=8),
    Modality.RADAR: RadarBevPreprocessing(rows=32, cols=32, x_min_m=0, x_max_m=16, y_half_m=8),
}


def test_pair_masks_hand_made() -> None:
    pos = np.array([[0, 0, 0], [3, 0, 0], [8, 0, 0], [50, 0, 0], [0, 0, 0]], float)
    group = np.array([0, 0, 0, 0, 1])
    p, v = pair_masks(pos, group, pos_r=5, neg_r=10, same_modality=False)
    assert p[0].tolist() == [True, True, False, False, False]
    assert v[0].tolist() == [True, True, False, True, True]  # 8 m is in the ignored band; other group: negative
    p, v = pair_masks(pos, group, pos_r=5, neg_r=10, same_modality=True)
    assert not p[0, 0] and not v[0, 0] and p[0, 1]


def test_info_nce_multi_matches_hand_computation() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    positive = torch.tensor([[True, True, False], [False, False, False]])
    valid = torch.tensor([[True, True, True], [True, True, True]])
    got = float(info_nce_multi(logits, positive, valid))
    want = -math.log((math.exp(2) + math.exp(1)) / (math.exp(2) + math.exp(1) + 1.0))  # row 2 has no positive
    assert got == pytest.approx(want, rel=1e-5)
    valid2 = torch.tensor([[True, True, False], [True, True, True]])  # excluding the negative -> loss 0
    assert float(info_nce_multi(logits, positive, valid2)) == pytest.approx(0.0, abs=1e-6)


def test_train_config_validation() -> None:
    with pytest.raises(ConfigError, match="train.neg_radius_m"):
        TrainConfig(pos_radius_m=10, neg_radius_m=5)
    with pytest.raises(ConfigError, match="train.epochs"):
        TrainConfig(epochs=0)


def test_training_frames_equal_runtime_preprocessing(tmp_path: Path) -> None:
    """The training path (frames_from_bag) and the runtime path (card preprocessing of reader samples) give
    identical tensors."""
    bag = tmp_path / "town" / "session_00"
    bag.parent.mkdir()
    write_bag(bag)
    frames = frames_from_bag(bag, SMALL)
    assert len(frames) == 10
    samples = list(read_samples(bag))
    for m in MODALITIES:
        runtime_pre = preprocessing_from_dict(SMALL[m].to_dict())  # as the encoder rebuilds it from its card
        stamps = [s.stamp_ns for s in samples if s.modality is m]
        data = [runtime_pre(s.data) for s in samples if s.modality is m]
        for i, t in enumerate(frames.stamps_ns):
            j = stamps.index(int(t))  # all three sensors share stamps in this bag
            np.testing.assert_array_equal(frames.tensors[m][i], data[j])
    np.testing.assert_allclose(frames.positions[:, 0], np.clip(np.arange(10) * 0.2 - 0.2, 0, None), atol=1e-9)
    # cache round trip
    a = load_frames([bag], SMALL, cache_dir=tmp_path / "cache")
    b = load_frames([bag], SMALL, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    for m in MODALITIES:
        np.testing.assert_array_equal(a.tensors[m], b.tensors[m])
    assert b.group_names == [str(bag.parent.resolve())]


def test_load_frames_of_several_cached_bags_equals_eager_concat(tmp_path: Path) -> None:
    """Cached bags are copied one by one into preallocated tensors: same result as concatenating the decoded bags,
    place groups per folder, and a bag preprocessed differently is refused by name."""
    bags = []
    for town in ("town_a", "town_b"):
        for session in ("session_00", "session_01"):
            bag = tmp_path / town / session
            bag.parent.mkdir(exist_ok=True)
            write_bag(bag)
            bags.append(bag)
    eager = FrameSet.concat([frames_from_bag(b, SMALL) for b in bags])
    first = load_frames(bags, SMALL, cache_dir=tmp_path / "cache")  # fills the cache
    again = load_frames(bags, SMALL, cache_dir=tmp_path / "cache")  # reads it lazily
    for got in (first, again):
        assert len(got) == len(eager) == 40
        for m in MODALITIES:
            assert got.tensors[m].dtype == np.float32
            np.testing.assert_array_equal(got.tensors[m], eager.tensors[m])
        np.testing.assert_array_equal(got.positions, eager.positions)
        np.testing.assert_array_equal(got.bag, np.repeat(np.arange(4), 10))
        np.testing.assert_array_equal(got.group, np.repeat([0, 1], 20))
    other = dict(SMALL)
    other[Modality.CAMERA] = CameraPreprocessing(width=16, height=12)
    odd = frames_from_bag(bags[0], other)
    with pytest.raises(BagError, match="camera tensors are float32"):
        FrameSet.concat([frames_from_bag(bags[1], SMALL), odd])


def test_tiny_training_run_checkpoint_and_export(tmp_path: Path) -> None:
    bag = tmp_path / "town" / "session_00"
    bag.parent.mkdir()
    write_bag(bag)
    frames = FrameSet.concat([frames_from_bag(bag, SMALL)])
    cfg = TrainConfig(epochs=2, batch_anchors=4, steps_per_epoch=2, pos_radius_m=0.3, neg_radius_m=0.6,
                      hard_max_m=3.0, min_time_apart_s=0.0, threads=1, seed=3)
    trainer = Trainer(cfg, {m: SMALL[m].input_shape for m in MODALITIES})
    history = trainer.fit(frames, (frames, frames))
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert set(history[0]["val_recall@1"]) == {f"{a.value}->{b.value}" for a in MODALITIES for b in MODALITIES}
    # checkpoint round trip gives the same outputs
    x = torch.from_numpy(parity_inputs(SMALL[Modality.LIDAR].input_shape))
    save_checkpoint(checkpoint_path(tmp_path, "lidar"), Modality.LIDAR, trainer.models[Modality.LIDAR],
                    SMALL[Modality.LIDAR].to_dict())
    mod, again, pre = load_checkpoint(checkpoint_path(tmp_path, "lidar"))
    assert mod is Modality.LIDAR and preprocessing_from_dict(pre) == SMALL[Modality.LIDAR]
    with torch.no_grad():
        np.testing.assert_array_equal(again(x).numpy(), trainer.models[Modality.LIDAR].eval()(x).numpy())
    # export every modality; the runtime encoder loads it and matches torch
    out = export_all(trainer.models, SMALL, tmp_path / "onnx", training={"seed": 3})
    for m in MODALITIES:
        assert out[m]["parity_max_abs_diff"] <= PARITY_TOLERANCE
        enc = OnnxEncoder(EncoderConfig(str(model_path(tmp_path / "onnx", m)), warmup_runs=0))
        assert enc.modality is m and load_card(model_path(tmp_path / "onnx", m)).training["seed"] == 3
        xin = parity_inputs(SMALL[m].input_shape, n=5, seed=9)
        with torch.no_grad():
            ref = trainer.models[m](torch.from_numpy(xin)).numpy()
        np.testing.assert_allclose(enc.encode_tensors(xin), ref, atol=PARITY_TOLERANCE)


def test_export_rejects_mismatched_preprocessing(tmp_path: Path) -> None:
    model = build_encoder(Modality.CAMERA, (3, 24, 32))
    with pytest.raises(ModelError, match="differs from preprocessing"):
        export_all({Modality.CAMERA: model}, {Modality.CAMERA: CameraPreprocessing()}, tmp_path, training={})


@pytest.mark.parametrize("modality", list(Modality))
def test_golden_shipped_model_onnx_equals_torch(modality: Modality) -> None:
    """Every shipped ONNX model gives the torch model's output (shipped beside it as .pt) on fixed inputs."""
    folder = models_dir()
    onnx_file = model_path(folder, modality)
    assert onnx_file.is_file(), f"shipped model missing: {onnx_file}"
    assert onnx_file.stat().st_size <= 10 * 2**20
    mod, model, pre = load_checkpoint(checkpoint_path(folder, modality))
    assert mod is modality
    enc = OnnxEncoder(EncoderConfig(str(onnx_file), warmup_runs=0))
    assert enc.preprocessing == preprocessing_from_dict(pre)
    x = parity_inputs(enc.card.input_shape, n=8, seed=1234)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = enc.encode_tensors(x)
    assert float(np.max(np.abs(got - ref))) <= PARITY_TOLERANCE
    assert got.shape == (8, 256)


def test_train_export_eval_commands_end_to_end(tmp_path: Path, capsys) -> None:
    """The three sub-commands on two tiny bags of one place: checkpoints, ONNX + cards, the 9-pair table."""
    import json

    from cmr_fusion_ros.cli import main

    town = tmp_path / "town"
    town.mkdir()
    write_bag(town / "session_00")
    write_bag(town / "session_01")
    out = tmp_path / "run"
    assert main(["train", "--bags", str(town), "--val-bags", str(town / "session_00"), str(town / "session_01"),
                 "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1", "--batch-anchors", "4",
                 "--threads", "1"]) == 2  # validation bags are also training bags: refused
    assert "also a training bag" in capsys.readouterr().err
    assert main(["train", "--bags", str(town / "session_00"), "--val-bags", str(town / "session_00"),
                 str(town / "session_01"), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1",
                 "--batch-anchors", "4", "--threads", "1"]) == 2
    assert main(["train", "--bags", str(town / "session_01"), "--val-bags", str(town / "session_00"),
                 str(town / "session_00"), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "1",
                 "--batch-anchors", "4", "--threads", "1", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1/1" in text and "camera->lidar=" in text
    log = json.loads((out / "training.json").read_text())
    assert log["seed"] == 5 and (out / "training.png").is_file()
    # fine-tuning from the checkpoints just written
    assert main(["train", "--bags", str(town / "session_01"), "--out", str(tmp_path / "tuned"), "--init", str(out),
                 "--epochs", "1", "--steps-per-epoch", "1", "--batch-anchors", "4", "--threads", "1"]) == 0
    assert "initialised from" in capsys.readouterr().out
    assert json.loads((tmp_path / "tuned" / "training.json").read_text())["init"] == str(out)
    # a wider radar encoder trained into the space of the frozen camera and LiDAR encoders, two validation places
    common = ["--bags", str(town / "session_01"), "--epochs", "1", "--steps-per-epoch", "1", "--batch-anchors", "4",
              "--threads", "1"]
    assert main(["train", *common, "--out", str(tmp_path / "radar"), "--init", str(out), "--freeze", "camera", "lidar",
                 "--widths", "radar=8,8,16,16,24", "--val-bags", str(town / "session_00"), str(town / "session_00"),
                 str(town / "session_00"), str(town / "session_00"), "--radar-scans", "2",
                 "--radar-scan-spacing", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "random start" in text and "frozen: camera, lidar; training: radar" in text
    assert "radar: " + str(out) + " was trained with other preprocessing" in text
    assert text.count("validation: database") == 2
    log = json.loads((tmp_path / "radar" / "training.json").read_text())
    assert log["widths"]["radar"] == [8, 8, 16, 16, 24] and log["widths"]["camera"] == [16, 32, 64, 96, 128]
    assert log["config"]["frozen"] == ["camera", "lidar"]
    assert main(["train", *common, "--out", str(tmp_path / "radar2"), "--init", str(tmp_path / "radar")]) == 0
    capsys.readouterr()  # fine-tuning without --widths keeps the checkpoint's widths
    assert json.loads((tmp_path / "radar2" / "training.json").read_text())["widths"]["radar"] == [8, 8, 16, 16, 24]
    for m in ("camera", "lidar"):  # frozen: the same weights as --init
        a, b = load_checkpoint(checkpoint_path(out, m))[1], load_checkpoint(checkpoint_path(tmp_path / "radar", m))[1]
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert main(["export", "--checkpoints", str(tmp_path / "radar"), "--out", str(tmp_path / "radar_onnx"),
                 "--no-latency"]) == 0
    enc = OnnxEncoder(EncoderConfig(str(model_path(tmp_path / "radar_onnx", "radar")), warmup_runs=0))
    assert enc.encode_tensors(parity_inputs(enc.card.input_shape, n=2)).shape == (2, 256)
    assert enc.preprocessing.scans == 2 and enc.preprocessing.scan_spacing_s == 0.2  # multi-scan radar in the card
    assert main(["eval", "--database", str(town / "session_00"), "--queries", str(town / "session_01"),
                 "--models", str(tmp_path / "radar_onnx")]) == 0
    assert "radar -> radar" in capsys.readouterr().out
    # a camera at a higher resolution, started from the checkpoints' convolutions
    assert main(["train", *common, "--out", str(tmp_path / "cam"), "--init", str(out), "--freeze", "lidar", "radar",
                 "--camera-size", "64x48"]) == 0
    assert "head resampled to the final map (2, 2)" in capsys.readouterr().out
    _, cam, cam_pre = load_checkpoint(checkpoint_path(tmp_path / "cam", "camera"))
    assert cam.input_shape == (3, 48, 64) and (cam_pre["params"]["width"], cam_pre["params"]["height"]) == (64, 48)
    # a LiDAR encoder whose bird's-eye half leaves the ground out and marks occupied cells with 1
    assert main(["train", *common, "--out", str(tmp_path / "lidar"), "--init", str(out), "--freeze", "camera", "radar",
                 "--lidar-occupancy", "binary", "--lidar-ground-clearance", "0.3"]) == 0
    assert "lidar: " + str(out) + " was trained with other preprocessing (same input shape)" in capsys.readouterr().out
    assert main(["export", "--checkpoints", str(tmp_path / "lidar"), "--out", str(tmp_path / "lidar_onnx"),
                 "--no-latency"]) == 0
    capsys.readouterr()
    enc = OnnxEncoder(EncoderConfig(str(model_path(tmp_path / "lidar_onnx", "lidar")), warmup_runs=0))
    assert (enc.preprocessing.occupancy, enc.preprocessing.ground_clearance_m) == ("binary", 0.3)
    for bad, what in ((["--freeze", "radar"], "need --init"),  # frozen without weights to keep
                      (["--lidar-ground-clearance", "-1"], "--lidar-ground-clearance"),
                      (["--camera-size", "64by48"], "--camera-size"),
                      (["--camera-size", "8x6"], "16..4096"),
                      (["--init", str(out), "--freeze", "camera", "--camera-size", "64x48"], "other preprocessing"),
                      (["--init", str(out), "--freeze", "radar", "--radar-scans", "2"], "other preprocessing"),
                      (["--radar-scans", "0"], "radar.scans"),
                      (["--init", str(out), "--widths", "radar=8,8"], "five integer widths"),
                      (["--init", str(out), "--widths", "sonar=8,8,8,8,8"], "MODALITY=W1"),
                      (["--init", str(out), "--freeze", "radar", "--widths", "radar=8,8,16,16,24"], "frozen checkpoint"),
                      (["--val-bags", str(town / "session_00")], "pairs of bags")):
        assert main(["train", *common, "--out", str(tmp_path / "bad"), *bad]) == 2
        assert what in capsys.readouterr().err
    models = tmp_path / "models"
    assert main(["export", "--checkpoints", str(out), "--out", str(models), "--no-latency"]) == 0
    res = tmp_path / "eval.json"
    assert main(["eval", "--database", str(town / "session_00"), "--queries", str(town / "session_01"),
                 "--models", str(models), "--json", str(res)]) == 0
    text = capsys.readouterr().out
    assert "camera -> lidar" in text and "radar -> radar" in text
    data = json.loads(res.read_text())
    assert len(data["pairs"]) == 9 and data["pairs"]["lidar->camera"]["num_counted"] == 10
    assert res.with_suffix(".png").is_file()
    # queries split by the heading gap to their nearest-heading positive (same direction here: all within 30 deg)
    assert "R@1 by heading gap" in text
    for pair in data["pairs"].values():
        gaps = pair["by_heading_gap_deg"]
        assert list(gaps) == ["0-30", "30-60", "60-90", "90-180"]
        assert sum(g["num_counted"] for g in gaps.values()) == pair["num_counted"] == gaps["0-30"]["num_counted"]
    yaw_res = tmp_path / "eval_yaw.json"  # both sessions drive the same way: the heading condition keeps every query
    assert main(["eval", "--database", str(town / "session_00"), "--queries", str(town / "session_01"),
                 "--models", str(models), "--json", str(yaw_res), "--max-yaw-diff", "30"]) == 0
    assert "heading within 30 deg" in capsys.readouterr().out
    yaw_data = json.loads(yaw_res.read_text())
    assert yaw_data["max_yaw_deg"] == 30.0 and yaw_data["pairs"]["lidar->camera"]["num_counted"] == 10
    assert main(["eval", "--database", str(town / "session_00"), "--queries", str(town / "session_01"),
                 "--models", str(models), "--max-yaw-diff", "0"]) == 2
    assert "--max-yaw-diff" in capsys.readouterr().err
    # LiDAR -> LiDAR with the scans turned (default: the runtime's 16 views and penalty) or as they are
    assert data["lidar_views"] == 16 and data["turned_view_penalty"] == 0.05
    assert data["pairs"]["lidar->lidar"]["query_views"] == 16 and "query_views" not in data["pairs"]["lidar->camera"]
    one = tmp_path / "eval_one.json"
    assert main(["eval", "--database", str(town / "session_00"), "--queries", str(town / "session_01"),
                 "--models", str(models), "--json", str(one), "--lidar-views", "1"]) == 0
    assert "query views" not in capsys.readouterr().out
    one_data = json.loads(one.read_text())
    assert one_data["lidar_views"] == 1 and "query_views" not in one_data["pairs"]["lidar->lidar"]
    assert one_data["pairs"]["camera->lidar"] == data["pairs"]["camera->lidar"]  # other pairs: one vector either way
    for bad, what in ((["--lidar-views", "0"], "--lidar-views"), (["--turned-view-penalty", "-1"], "--turned-view")):
        assert main(["eval", "--database", str(town / "session_00"), "--queries", str(town / "session_01"),
                     "--models", str(models), *bad]) == 2
        assert what in capsys.readouterr().err
    assert main(["export", "--checkpoints", str(out), "--out", str(models), "--no-latency", "--metrics", str(res)]) == 0
    # metrics measured on other models are refused (and no card is left carrying them)
    other = json.loads(res.read_text())
    other["model_sha256"]["radar"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["export", "--checkpoints", str(out), "--out", str(tmp_path / "m2"), "--no-latency", "--metrics",
                 str(tmp_path / "other.json")]) == 2
    assert "measured on a model" in capsys.readouterr().err
    assert not list((tmp_path / "m2").glob("*.json"))
    card = load_card(model_path(models, "radar"))
    assert card.metrics["recall"]["radar->lidar"]["recall@1"] == data["pairs"]["radar->lidar"]["recall@1"]
    assert card.metrics["lidar_views"] == 16 and card.metrics["turned_view_penalty"] == 0.05  # how LiDAR->LiDAR was run
    assert card.training["seed"] == 5
    # exporting the radar-only run over these models: the frozen camera/LiDAR cards keep the history of the run that
    # trained them (and say which run kept them frozen); the radar card gets the new run's
    assert main(["export", "--checkpoints", str(tmp_path / "radar"), "--out", str(models), "--no-latency"]) == 0
    assert "camera: frozen in this training and unchanged" in capsys.readouterr().out
    radar_log = json.loads((tmp_path / "radar" / "training.json").read_text())
    for m in ("camera", "lidar"):
        t = load_card(model_path(models, m)).training
        assert t["seed"] == 5 and t["command"] == log["command"] and t["frozen_in"] == radar_log["command"]
    t = load_card(model_path(models, "radar")).training
    assert t["command"] == radar_log["command"] and "frozen_in" not in t
    assert load_card(model_path(models, "camera")).training["export_command"] == t["export_command"]  # this export


def test_expand_bags_finds_nested_sessions(tmp_path: Path) -> None:
    from cmr_fusion_ros.commands.train import expand_bags

    for town in ("town_2", "town_1"):
        for s in ("session_01", "session_00"):
            (tmp_path / town / s).mkdir(parents=True)
            (tmp_path / town / s / "metadata.yaml").write_text("x")
    got = expand_bags([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "town_1/session_00", "town_1/session_01", "town_2/session_00", "town_2/session_01"]
    assert expand_bags([tmp_path / "town_2" / "session_00"]) == [tmp_path / "town_2" / "session_00"]


def test_frozen_encoders_keep_their_weights_and_the_others_train(tmp_path: Path) -> None:
    """--freeze: the frozen encoders' weights and batch-norm statistics do not move, only pairs with a trained
    modality enter the loss, and the trained encoder changes; several validation places are averaged."""
    bag = tmp_path / "town" / "session_00"
    bag.parent.mkdir()
    write_bag(bag)
    frames = FrameSet.concat([frames_from_bag(bag, SMALL)])
    cfg = TrainConfig(epochs=1, batch_anchors=4, steps_per_epoch=3, pos_radius_m=0.3, neg_radius_m=0.6,
                      hard_max_m=3.0, min_time_apart_s=0.0, threads=1, seed=3, frozen=("camera", Modality.LIDAR))
    assert cfg.frozen == (Modality.CAMERA, Modality.LIDAR)
    shapes = {m: SMALL[m].input_shape for m in MODALITIES}
    trainer = Trainer(cfg, shapes, widths={Modality.RADAR: (8, 8, 16, 16, 24)})
    assert trainer.models[Modality.RADAR].widths == (8, 8, 16, 16, 24)
    assert trainer.pairs == [(Modality.CAMERA, Modality.RADAR), (Modality.LIDAR, Modality.RADAR),
                             (Modality.RADAR, Modality.RADAR)]
    before = {m: {k: v.clone() for k, v in trainer.models[m].state_dict().items()} for m in MODALITIES}
    history = trainer.fit(frames, [(frames, frames), (frames.subset(np.arange(5)), frames)])
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    for m in (Modality.CAMERA, Modality.LIDAR):
        for k, v in trainer.models[m].state_dict().items():
            assert torch.equal(v, before[m][k]), f"{m.value} {k} moved"
    moved = [k for k, v in trainer.models[Modality.RADAR].state_dict().items()
             if v.dtype.is_floating_point and not torch.equal(v, before[Modality.RADAR][k])]
    assert moved, "the radar encoder did not train"
    # widths of a checkpoint must match the encoder it initialises
    with pytest.raises(ConfigError, match="train.init.radar"):
        trainer.load(Modality.RADAR, build_encoder(Modality.RADAR, shapes[Modality.RADAR]))


@pytest.mark.parametrize("frozen", [("sonar",), ("camera", "lidar", "radar")])
def test_train_config_frozen_validation(frozen: tuple) -> None:
    with pytest.raises(ConfigError, match="train.frozen"):
        TrainConfig(frozen=frozen)


def test_validate_places_averages_places() -> None:
    from cmr_fusion_ros.training.train import validate, validate_places

    rng = np.random.default_rng(0)
    def frames(n: int) -> FrameSet:
        return FrameSet({m: rng.normal(size=(n, *SMALL[m].input_shape)).astype(np.float32) for m in MODALITIES},
                        np.c_[np.arange(n) * 20.0, np.zeros((n, 2))], np.zeros(n), np.arange(n, dtype=np.int64),
                        np.zeros(n, np.int64), np.zeros(n, np.int64), ["b"], ["g"])
    models = {m: build_encoder(m, SMALL[m].input_shape).eval() for m in MODALITIES}
    a, b = (frames(6), frames(6)), (frames(4), frames(4))
    ra, rb = validate(models, *a), validate(models, *b)
    got = validate_places(models, [a, b])
    assert got == {k: pytest.approx((ra[k] + rb[k]) / 2) for k in ra}


def test_resize_input_reuses_convolutions_and_resamples_the_head() -> None:
    """A model moved to a larger input keeps its convolutions and bias; a head that is the same at every position of
    the final map stays the same (scaled by the map-size ratio, so a constant map gives the same output)."""
    torch.manual_seed(0)
    small = build_encoder(Modality.CAMERA, (3, 72, 96)).eval()
    with torch.no_grad():  # a head that does not depend on the position in the 3 x 3 map
        per_channel = torch.randn(small.dim, small.widths[-1], 1, 1)
        small.head.weight.copy_(per_channel.expand(-1, -1, 3, 3).reshape(small.dim, -1))
    big = resize_input(small, (3, 120, 160))
    assert big.input_shape == (3, 120, 160) and big.final_map == (4, 5) and not big.training
    assert all(torch.equal(v, big.features.state_dict()[k]) for k, v in small.features.state_dict().items())
    assert torch.equal(big.head.bias, small.head.bias)
    expected = (per_channel * 9 / 20).expand(-1, -1, 4, 5).reshape(small.dim, -1)
    assert torch.allclose(big.head.weight, expected, atol=1e-6)
    const_small, const_big = torch.ones(2, small.widths[-1] * 9), torch.ones(2, small.widths[-1] * 20)
    assert torch.allclose(small.head(const_small), big.head(const_big), atol=1e-4)
    with pytest.raises(ModelError, match="input channels"):
        resize_input(small, (1, 120, 160))


def test_pair_masks_heading_condition() -> None:
    """With a heading limit, a close pair facing away is neither positive nor valid; far pairs stay negatives."""
    pos = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [50, 0, 0]], float)
    group = np.zeros(4, np.int64)
    yaw = np.radians([0.0, 170.0, -50.0, 180.0])
    p, v = pair_masks(pos, group, pos_r=5, neg_r=10, same_modality=False, yaw=yaw, max_yaw_deg=60)
    assert p[0].tolist() == [True, False, True, False] and v[0].tolist() == [True, False, True, True]
    assert p[1].tolist() == [False, True, False, False]  # 170 vs -50 deg: 140 deg apart (wraps)
    assert pair_masks(pos, group, 5, 10, False, yaw, 180.0)[0][0, 1]
    for a, b in zip(pair_masks(pos, group, 5, 10, False, yaw, 180.0), pair_masks(pos, group, 5, 10, False)):
        assert (a == b).all()  # 180: any heading, as without yaw


def test_heading_limit_spares_lidar_pairs_and_filters_sampled_positives() -> None:
    """pos_max_yaw_deg applies to pairs with a camera or radar only: two frames at one spot facing opposite ways
    are positives for LiDAR-LiDAR alone; the batch sampler only offers positives within the limit."""
    from cmr_fusion_ros.training.train import _Index

    shapes = {m: SMALL[m].input_shape for m in MODALITIES}
    cfg = TrainConfig(pos_max_yaw_deg=60, frozen=(Modality.CAMERA, Modality.RADAR), threads=1, seed=1)
    trainer = Trainer(cfg, shapes)
    for model in trainer.models.values():
        model.eval()
    torch.manual_seed(0)
    batch = {m: torch.rand(3, *shapes[m]) for m in MODALITIES}
    pos, group = np.array([[0.0, 0, 0], [0, 0, 0], [50, 0, 0]]), np.zeros(3, np.int64)  # two at one spot, one far
    yaw = np.radians([0.0, 180.0, 0.0])
    got = float(trainer.loss(batch, pos, group, yaw).detach())
    with torch.no_grad():
        e = {m: trainer.models[m](batch[m]) for m in MODALITIES}
        scale = trainer.logit_scale.clamp(max=math.log(100.0)).exp()

        def term(a: Modality, b: Modality, limit: float) -> float:
            lg = scale * e[a] @ e[b].T
            p, v = (torch.from_numpy(x) for x in pair_masks(pos, group, 5.0, 12.0, a == b, yaw, limit))
            return float(0.5 * (info_nce_multi(lg, p, v) + info_nce_multi(lg.T, p.T, v.T)))

        lidar_any = term(Modality.CAMERA, Modality.LIDAR, 60) + term(Modality.LIDAR, Modality.LIDAR, 180)
        lidar_limited = term(Modality.CAMERA, Modality.LIDAR, 60) + term(Modality.LIDAR, Modality.LIDAR, 60)
        rest = term(Modality.LIDAR, Modality.RADAR, 60)
    assert got == pytest.approx((lidar_any + rest) / 3, rel=1e-5)
    assert got != pytest.approx((lidar_limited + rest) / 3, rel=1e-3)  # the LiDAR-LiDAR pair kept its positive

    n = 4
    frames = FrameSet({m: np.zeros((n, *shapes[m]), np.float32) for m in MODALITIES}, np.zeros((n, 3)),
                      np.radians([0.0, 170.0, 30.0, 100.0]), np.arange(n, dtype=np.int64) * 20_000_000_000,
                      np.zeros(n, np.int64), np.zeros(n, np.int64), ["bag"], ["place"])
    assert _Index(frames, cfg).partners(0)[0].tolist() == [2]
    assert _Index(frames, TrainConfig(pos_max_yaw_deg=180)).partners(0)[0].tolist() == [1, 2, 3]
    with pytest.raises(ConfigError, match="pos_max_yaw_deg"):
        TrainConfig(pos_max_yaw_deg=0)


def test_flip_augmentation_mirrors_each_image_in_place() -> None:
    """The batch flip is the runtime preprocessing's mirror (``core.preprocess.mirror``): for the LiDAR bird's-eye +
    front view tensor each half is mirrored in place, the halves stay where the encoder sees them at run time."""
    pre = LidarBevFrontPreprocessing()
    rng = np.random.default_rng(4)
    x = rng.random((2, *pre.input_shape)).astype(np.float32)
    got = mirror_batch(torch.from_numpy(x), pre.mirror_segments).numpy()
    np.testing.assert_array_equal(got, mirror(pre, x))
    shapes = {Modality.CAMERA: (3, 24, 32), Modality.LIDAR: pre.input_shape, Modality.RADAR: (3, 32, 64)}
    segs = {m: ((0, shapes[m][2]),) for m in shapes} | {Modality.LIDAR: pre.mirror_segments}
    trainer = Trainer(TrainConfig(threads=1), shapes, mirror=segs)
    assert trainer.mirror[Modality.LIDAR] == ((0, 64), (64, 128))
    assert Trainer(TrainConfig(threads=1), shapes).mirror[Modality.LIDAR] == ((0, 128),)  # default: one image
    batch = {m: torch.from_numpy(rng.random((2, *shapes[m])).astype(np.float32)) for m in shapes}
    before = {m: t.clone() for m, t in batch.items()}
    cfg = TrainConfig(flip_p=0.999, color_jitter=0.0, threads=1)  # always flips, nothing else
    _augment(batch, cfg, np.random.default_rng(0), trainer.mirror)
    np.testing.assert_array_equal(batch[Modality.LIDAR].numpy(), mirror(pre, before[Modality.LIDAR].numpy()))
    np.testing.assert_array_equal(batch[Modality.CAMERA].numpy(), before[Modality.CAMERA].numpy()[..., ::-1])


def _anchor_setup(tmp_path: Path, weight: float):
    bag = tmp_path / "town" / "session_00"
    if not bag.exists():
        bag.parent.mkdir(exist_ok=True)
        write_bag(bag)
    frames = FrameSet.concat([frames_from_bag(bag, SMALL)])
    cfg = TrainConfig(epochs=1, batch_anchors=6, steps_per_epoch=6, pos_radius_m=0.3, neg_radius_m=0.6, lr=5e-3,
                      hard_max_m=3.0, min_time_apart_s=0.0, threads=1, seed=4, anchor_weight=weight, dropout=0.0)
    shapes = {m: SMALL[m].input_shape for m in MODALITIES}
    return frames, cfg, shapes


def test_anchored_frames_add_the_distillation_term_and_stay_near_the_teacher(tmp_path: Path) -> None:
    """The distillation term is anchor_weight x mean(1 - cos(student, teacher)) over the anchored frames only (zero
    when the student is the teacher); training with anchored frames keeps their embeddings nearer the teacher's than
    the same training without the term."""
    from cmr_fusion_ros.training.train import embed_frames

    frames, cfg, shapes = _anchor_setup(tmp_path, 2.0)
    trainer = Trainer(cfg, shapes)
    teachers = {m: build_encoder(m, shapes[m]) for m in MODALITIES}
    trainer.set_teachers(trainer.models)  # the student itself: no distillation loss
    for mdl in trainer.models.values():
        mdl.eval()
    idx = np.arange(min(8, len(frames)))
    batch = {m: torch.from_numpy(frames.tensors[m][idx]) for m in MODALITIES}
    args = (batch, frames.positions[idx], frames.group[idx], frames.yaw[idx])
    with torch.no_grad():
        base = float(trainer.loss(*args))
        assert float(trainer.loss(*args, np.ones(len(idx), bool))) == pytest.approx(base, abs=1e-6)
        assert trainer.last_anchor_loss == pytest.approx(0.0, abs=1e-6)
        trainer.set_teachers(teachers)  # other encoders: the term is the mean 1 - cosine over the flagged frames
        flags = np.arange(len(idx)) % 2 == 0
        with_term = float(trainer.loss(*args, flags))
        expect = np.mean([float((1 - (trainer.models[m](batch[m][torch.from_numpy(flags)])
                                      * trainer.teachers[m](batch[m][torch.from_numpy(flags)])).sum(1)).mean())
                          for m in MODALITIES])
        assert trainer.last_anchor_loss == pytest.approx(expect, rel=1e-5)
        assert with_term == pytest.approx(base + 2.0 * expect, rel=1e-5)
        assert float(trainer.loss(*args, np.zeros(len(idx), bool))) == pytest.approx(base, abs=1e-6)
    with pytest.raises(ConfigError, match="train.anchor"):
        trainer.fit(frames, None, anchor=np.ones(len(frames) + 1, bool))

    def closeness(weight: float) -> float:
        fr, c, sh = _anchor_setup(tmp_path, weight)
        tr = Trainer(c, sh)
        start = {m: build_encoder(m, sh[m]) for m in MODALITIES}
        for m, mdl in start.items():
            tr.load(m, mdl)
        tr.set_teachers(start)
        history = tr.fit(fr, None, anchor=np.ones(len(fr), bool))
        assert (history[0]["anchor_loss"] is not None) == (weight > 0)
        student, teacher = embed_frames(tr.models, fr), embed_frames(start, fr)
        return float(np.mean([np.mean(np.sum(student[m] * teacher[m], axis=1)) for m in MODALITIES]))

    torch.manual_seed(0)
    assert closeness(20.0) > closeness(0.0) + 0.01
    with pytest.raises(ConfigError, match="train.anchor_weight"):
        TrainConfig(anchor_weight=-1.0)


def _first_model(tmp_path: Path, town: Path, capsys) -> list[str]:
    """Writes town/session_00 and trains tmp_path/first on it in one step; returns those quick training options."""
    from cmr_fusion_ros.cli import main

    write_bag(town / "session_00")
    common = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-anchors", "4", "--threads", "1"]
    assert main(["train", "--bags", str(town / "session_00"), "--out", str(tmp_path / "first"), *common]) == 0
    capsys.readouterr()
    return common


def test_train_command_anchor_bags(tmp_path: Path, capsys) -> None:
    """--anchor-bags: refused without the encoders to hold them to or when not training bags; with --init the
    anchored frames are counted, the log names the bags and each epoch reports the distillation term."""
    import json

    from cmr_fusion_ros.cli import main

    town = tmp_path / "town"
    town.mkdir()
    write_bag(town / "session_01")
    common = _first_model(tmp_path, town, capsys)
    assert main(["train", "--bags", str(town / "session_00"), "--out", str(tmp_path / "x"), *common,
                 "--anchor-bags", str(town / "session_00")]) == 2
    assert "--anchor-bags" in capsys.readouterr().err
    assert main(["train", "--bags", str(town / "session_00"), "--out", str(tmp_path / "x"), *common,
                 "--init", str(tmp_path / "first"), "--anchor-bags", str(town / "session_01")]) == 2
    err = capsys.readouterr().err
    assert "--anchor-bags" in err and "session_01" in err and "also training bags" in err
    out = tmp_path / "anchored"
    assert main(["train", "--bags", str(town / "session_00"), str(town / "session_01"), "--out", str(out), *common,
                 "--init", str(tmp_path / "first"), "--anchor-bags", str(town / "session_01"),
                 "--anchor-weight", "3"]) == 0
    text = capsys.readouterr().out
    n1 = len(FrameSet.concat([frames_from_bag(town / "session_01", SMALL)]))
    assert f"anchored: {n1} frames of 1 bags held near {tmp_path / 'first'}" in text and "(weight 3)" in text
    assert " anchor=" in text
    log = json.loads((out / "training.json").read_text())
    assert log["anchor_bags"] == [str(town / "session_01")] and log["anchor_models"] == str(tmp_path / "first")
    assert log["config"]["anchor_weight"] == 3.0 and log["history"][0]["anchor_loss"] is not None


def test_paired_targets_match_by_stamp_and_pull_the_student_towards_them(tmp_path: Path) -> None:
    """paired_targets: each training frame gets the teacher's embedding of the reference frame nearest in time
    (plain, and of the mirrored input for mirrored batches), none beyond the tolerance; the pair term is pair_weight x
    mean(1 - cos(student, target)); training with it brings the paired frames' embeddings nearer their targets than
    the same training without it."""
    from cmr_fusion_ros.training.train import PairTargets, embed_frames, paired_targets

    frames, cfg, shapes = _anchor_setup(tmp_path, 0.0)
    rng = np.random.default_rng(3)
    n = len(frames)
    ref_tensors = {m: rng.random(frames.tensors[m].shape).astype(np.float32) for m in MODALITIES}
    shift = np.where(np.arange(n) % 3 == 2, 100_000_000, 20_000_000)  # every third: none within 50 ms (5 Hz)
    ref = FrameSet(ref_tensors, frames.positions, frames.yaw, frames.stamps_ns + shift, frames.bag, frames.group,
                   frames.bag_names, frames.group_names)
    teachers = {m: build_encoder(m, shapes[m]).eval() for m in MODALITIES}
    trainer = Trainer(cfg, shapes)
    pt = paired_targets(teachers, frames, [(0, ref)], trainer.mirror, tolerance_ns=50_000_000)
    assert isinstance(pt, PairTargets)
    has = np.arange(n) % 3 != 2
    assert np.array_equal(pt.row >= 0, has) and pt.count == int(has.sum())
    with torch.no_grad():
        for m in MODALITIES:
            x = torch.from_numpy(ref_tensors[m][has])
            np.testing.assert_allclose(pt.plain[m][pt.row[has]], teachers[m](x).numpy(), atol=1e-5)
            np.testing.assert_allclose(pt.mirrored[m][pt.row[has]],
                                       teachers[m](mirror_batch(x, trainer.mirror[m])).numpy(), atol=1e-5)
    assert paired_targets(teachers, frames, [(0, ref)], trainer.mirror, tolerance_ns=10_000_000).count == 0
    assert paired_targets(teachers, frames, [(1, ref)], trainer.mirror).count == 0  # no training frame of bag 1

    cfg2 = TrainConfig(**{**cfg.__dict__, "pair_weight": 2.0})
    tr = Trainer(cfg2, shapes)
    for mdl in tr.models.values():
        mdl.eval()
    idx = np.arange(min(8, n))
    batch = {m: torch.from_numpy(frames.tensors[m][idx]) for m in MODALITIES}
    args = (batch, frames.positions[idx], frames.group[idx], frames.yaw[idx], None)
    rows = pt.row[idx]
    at = np.nonzero(rows >= 0)[0]
    with torch.no_grad():
        base = float(tr.loss(*args))
        got = float(tr.loss(*args, {m: (at, pt.plain[m][rows[at]]) for m in MODALITIES}))
        expect = np.mean([float((1 - (tr.models[m](batch[m])[torch.from_numpy(at)]
                                      * torch.from_numpy(pt.plain[m][rows[at]])).sum(1)).mean()) for m in MODALITIES])
    assert tr.last_pair_loss == pytest.approx(expect, rel=1e-5)
    assert got == pytest.approx(base + 2.0 * expect, rel=1e-5)
    with pytest.raises(ConfigError, match="train.pairs"):
        tr.fit(frames, None, paired=PairTargets(np.zeros(n + 1, np.int64), pt.plain, pt.mirrored))

    def closeness(weight: float) -> float:  # the reference: the same frames; the teacher: the starting encoders
        fr, c, sh = _anchor_setup(tmp_path, 0.0)
        t = Trainer(TrainConfig(**{**c.__dict__, "pair_weight": weight}), sh)
        start = {m: build_encoder(m, sh[m]).eval() for m in MODALITIES}
        for m, mdl in start.items():
            t.load(m, mdl)
        targets = paired_targets(start, fr, [(0, fr)], t.mirror)
        history = t.fit(fr, None, paired=targets)
        assert (history[0]["pair_loss"] is not None) == (weight > 0)
        student = embed_frames(t.models, fr)
        return float(np.mean([np.mean(np.sum(student[m] * targets.plain[m][targets.row], axis=1))
                              for m in MODALITIES]))

    torch.manual_seed(0)
    assert closeness(20.0) > closeness(0.0) + 0.01
    with pytest.raises(ConfigError, match="train.pair_weight"):
        TrainConfig(pair_weight=-1.0)


def test_train_command_pair(tmp_path: Path, capsys) -> None:
    """--pair BAGS REFERENCE: folders pair their bags by relative path; refused without the encoders that embed the
    references, for a bag that is not a training bag, or without its reference; the paired frames are counted, the
    log names the pairs and each epoch reports the term."""
    import json

    from cmr_fusion_ros.cli import main

    town, twin = tmp_path / "town", tmp_path / "twin"
    for d in (town, twin):
        d.mkdir()
    write_bag(twin / "session_00")
    write_bag(town / "session_01")
    common = _first_model(tmp_path, town, capsys)
    bags = ["--bags", str(town / "session_00"), str(town / "session_01")]
    assert main(["train", *bags, "--out", str(tmp_path / "x"), *common,
                 "--pair", str(town / "session_00"), str(twin / "session_00")]) == 2
    assert "--pair" in capsys.readouterr().err
    assert main(["train", "--bags", str(town / "session_01"), "--out", str(tmp_path / "x"), *common,
                 "--init", str(tmp_path / "first"), "--pair", str(town / "session_00"), str(twin / "session_00")]) == 2
    assert "also training bags" in capsys.readouterr().err
    assert main(["train", *bags, "--out", str(tmp_path / "x"), *common, "--init", str(tmp_path / "first"),
                 "--pair", str(town), str(twin)]) == 2  # town/session_01 has no twin
    err = capsys.readouterr().err
    assert "--pair" in err and "session_01" in err and "is none" in err
    out = tmp_path / "paired"
    assert main(["train", *bags, "--out", str(out), *common, "--init", str(tmp_path / "first"),
                 "--pair", str(town / "session_00"), str(twin / "session_00"), "--pair-weight", "3"]) == 0
    text = capsys.readouterr().out
    n0 = len(FrameSet.concat([frames_from_bag(town / "session_00", SMALL)]))
    assert f"paired: {n0} of {n0} frames of 1 bags pulled towards {tmp_path / 'first'}" in text
    assert "(weight 3; 0 without" in text and " pair=" in text
    log = json.loads((out / "training.json").read_text())
    assert log["pairs"] == [[str(town / "session_00"), str(twin / "session_00")]] and log["paired_frames"] == n0
    assert log["config"]["pair_weight"] == 3.0 and log["history"][0]["pair_loss"] is not None
