"""Per-pair score calibration: the logistic fit, the cards, the policy's probability threshold, the events' field."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cmr_fusion_ros.core.calibration import PairCalibration, ScoreCalibration, fit_platt
from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.policy import MatchPolicy, PolicyConfig
from cmr_fusion_ros.core.types import Modality, Pose
from cmr_fusion_ros.eval.calibrate import best_match_samples, fit_calibration, write_calibration
from cmr_fusion_ros.eval.evaluate import BagEmbeddings
from tests.unit.test_policy import entry, nb, query

C, L, R = Modality.CAMERA, Modality.LIDAR, Modality.RADAR
MODELS = Path(__file__).resolve().parents[2] / "models"


def test_fit_platt_recovers_a_known_logistic() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.0, 1.0, 40000)
    y = rng.random(len(s)) < 1 / (1 + np.exp(-(20 * s - 12)))
    a, b = fit_platt(s, y)
    assert a == pytest.approx(20, rel=0.05) and b == pytest.approx(-12, rel=0.05)
    c = PairCalibration(a, b)
    assert c(c.score_for(0.9)) == pytest.approx(0.9) and c(-1.0) < 1e-4
    with pytest.raises(ConfigError, match="calibration.samples"):
        fit_platt(np.zeros(1), np.zeros(1))


def test_cards_round_trip_and_bad_blocks() -> None:
    cal = ScoreCalibration({(C, L): PairCalibration(20.0, -12.0, 100, 40), (C, R): PairCalibration(30.0, -10.0),
                            (L, C): PairCalibration(15.0, -9.0)})

    class Enc:
        def __init__(self, block):
            self.card = type("Card", (), {"score_calibration": block})()

    back = ScoreCalibration.from_cards({C: Enc(cal.card_block(C, "cmd")), L: Enc(cal.card_block(L)), R: Enc({})})
    assert back.pairs.keys() == cal.pairs.keys()
    assert back.probability(C, L, 0.6) == pytest.approx(cal.probability(C, L, 0.6))
    assert math.isnan(back.probability(R, C, 0.9)) and cal.card_block(C, "cmd")["source"] == "cmd"
    assert not ScoreCalibration({}) and cal.card_block(R) == {}
    with pytest.raises(ConfigError, match="camera card score_calibration.lidar"):
        ScoreCalibration.from_cards({C: Enc({"lidar": {"a": "x"}})})


def test_policy_thresholds_the_probability_and_events_carry_it() -> None:
    cal = ScoreCalibration({(C, L): PairCalibration(20.0, -12.0)})  # p = 0.5 at cosine 0.6, p = 0.9 at 0.71
    p = MatchPolicy(PolicyConfig.from_dict({"min_score": 0.3, "min_probability": 0.9}), cal)
    far = Pose(100.0, 0, 0)
    got = p.decide(query(100.0), [nb(entry(1, L, 0.0), 0.65, 0), nb(entry(2, R, 0.0, far), 0.4, 1)])
    assert [(r.match_id, r.match_modality) for r in got] == [(2, R)]  # camera->radar: no calibration, min_score only
    assert math.isnan(got[0].probability)
    got = p.decide(query(200.0), [nb(entry(3, L, 1.0), 0.75, 0)])
    assert [r.match_id for r in got] == [3] and got[0].probability == pytest.approx(cal.probability(C, L, 0.75))
    off = MatchPolicy(PolicyConfig.from_dict({"min_score": 0.3}), cal)  # min_probability 0: off
    assert [r.match_id for r in off.decide(query(300.0), [nb(entry(4, L, 2.0), 0.65, 0)])] == [4]
    with pytest.raises(ConfigError, match="policy.min_probability"):
        PolicyConfig.from_dict({"min_probability": 1.5})
    from cmr_fusion_ros.bag.offline import event_record

    assert event_record(got[0])["probability"] == pytest.approx(got[0].probability, abs=1e-6)


def _emb(vectors, xs) -> dict:
    v = np.asarray(vectors, np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, np.stack([np.asarray(xs, float), np.zeros(len(xs)), np.zeros(len(xs))], axis=1)


def test_best_match_samples_and_fit_on_hand_made_embeddings() -> None:
    dbv, dbp = _emb([[1, 0], [0, 1]], [0.0, 100.0])
    qv, qp = _emb([[1, 0.1], [0.1, 1], [1, 0.05]], [3.0, 300.0, 50.0])
    db = BagEmbeddings("db", {C: dbv}, {C: dbp}, {C: np.zeros(2, np.int64)})
    q = BagEmbeddings("q", {L: qv}, {L: qp}, {L: np.zeros(3, np.int64)})
    ((pair, (scores, labels)),) = best_match_samples(db, q, 10.0).items()
    assert pair == (L, C) and labels.tolist() == [True, False, False]  # 3 m: true; 200 m and 50 m: false
    assert scores == pytest.approx(np.max(qv @ dbv.T, axis=1))
    cal, samples = fit_calibration([(db, q)], 10.0)
    assert not cal and samples[(L, C)][0].shape == (3,)  # 3 samples: too few to fit


def test_top_k_samples_every_candidate_the_policy_can_emit() -> None:
    dbv, dbp = _emb([[1, 0], [0, 1], [0.8, 0.6]], [0.0, 100.0, 40.0])
    qv, qp = _emb([[1, 0.1], [0.1, 1]], [3.0, 97.0])
    db = BagEmbeddings("db", {C: dbv}, {C: dbp}, {C: np.zeros(3, np.int64)})
    q = BagEmbeddings("q", {L: qv}, {L: qp}, {L: np.zeros(2, np.int64)})
    scores, labels = best_match_samples(db, q, 10.0, top_k=2)[(L, C)]
    sims = qv @ dbv.T
    order = np.argsort(-sims, axis=1)[:, :2]
    assert scores == pytest.approx(np.take_along_axis(sims, order, axis=1).ravel())  # query-major, best first
    assert order.tolist() == [[0, 2], [1, 2]]
    assert labels.tolist() == [True, False, True, False]  # the 2nd candidates lie 37 m and 57 m away
    assert best_match_samples(db, q, 10.0, top_k=10)[(L, C)][0].shape == (6,)  # at most every database frame
    with pytest.raises(ValueError, match="top_k"):
        best_match_samples(db, q, 10.0, top_k=0)
    _, samples = fit_calibration([(db, q)], 10.0, top_k=2)
    assert samples[(L, C)][0].shape == (4,)


def test_write_calibration_into_copied_cards_and_load_it(tmp_path: Path) -> None:
    from cmr_fusion_ros.core.encoder import load_encoders

    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    encoders = load_encoders(models)
    cal = ScoreCalibration({(C, L): PairCalibration(20.0, -12.0, 100, 40)})
    (path,) = write_calibration(cal, encoders, "cmd")
    assert json.loads(Path(path).read_text())["score_calibration"]["lidar"]["a"] == 20.0
    again = load_encoders(models)
    assert ScoreCalibration.from_cards(again).probability(C, L, 0.6) == pytest.approx(0.5)


def test_calibrate_and_eval_events_commands(tmp_path: Path, capsys) -> None:
    from cmr_fusion_ros.cli import main
    from tests.unit.test_bag_reader import write_bag

    write_bag(tmp_path / "a")
    write_bag(tmp_path / "b")
    assert main(["calibrate", "--val-bags", str(tmp_path / "a"), str(tmp_path / "b"), "--models", str(MODELS)]) == 0
    out = capsys.readouterr().out
    assert "camera -> lidar" in out and "not fitted (too few samples" in out  # 10 frames per modality
    assert main(["calibrate", "--val-bags", str(tmp_path / "a")]) == 2
    assert "pairs of bags" in capsys.readouterr().err
    assert main(["calibrate", "--val-bags", str(tmp_path / "a"), str(tmp_path / "b"), "--top-k", "0"]) == 2
    assert "--top-k" in capsys.readouterr().err
    assert main(["calibrate", "--val-bags", str(tmp_path / "a"), str(tmp_path / "b"), "--models", str(MODELS),
                 "--top-k", "1", "--rig", "off"]) == 0
    assert "camera -> lidar" in capsys.readouterr().out
    events = tmp_path / "events.jsonl"
    rows = [(0.9, 0.95), (0.8, None), (0.7, 0.2)]
    events.write_text("".join(json.dumps({"stamp_ns": 2_500_000_000, "match_stamp_ns": 1_000_000_000, "score": s,
                                          "probability": p, "query_modality": "camera", "match_modality": "lidar"})
                              + "\n" for s, p in rows))
    assert main(["eval-events", str(events), "--truth", str(tmp_path / "a"), "--exclude-recent", "0.5",
                 "--score", "probability"]) == 0
    assert "threshold over the event field 'probability': 2 events carry it" in capsys.readouterr().out


def test_process_with_the_shipped_cards_writes_probabilities_and_thresholds_them(tmp_path: Path, capsys) -> None:
    """The sample bag through `process` with the shipped cards: every event carries its pair's probability; with
    policy.min_probability every event reaches it."""
    from cmr_fusion_ros.cli import main
    from cmr_fusion_ros.core.config import load_parameter_file, render_parameter_file

    repo = MODELS.parent
    bag = repo / "bags" / "sample_town" / "session_00"
    p = load_parameter_file(repo / "config" / "fusion.yaml", "fusion_node")
    runs = {}
    for name, min_p in (("off", 0.0), ("on", 0.9)):
        p["policy"]["min_score"] = 0.3
        p["policy"]["min_probability"] = min_p
        params = tmp_path / f"{name}.yaml"
        params.write_text(render_parameter_file({"fusion_node": p}, "test"))
        assert main(["process", str(bag), "--out", str(tmp_path / name), "--params", str(params),
                     "--models", str(MODELS), "--no-progress"]) == 0
        runs[name] = [json.loads(x) for x in (tmp_path / name / "events.jsonl").read_text().splitlines() if x]
    capsys.readouterr()
    from cmr_fusion_ros.core.encoder import load_encoders

    cal = ScoreCalibration.from_cards(load_encoders(MODELS))
    assert runs["off"] and all(e["probability"] is not None for e in runs["off"])
    for e in runs["off"][:20]:
        want = cal.probability(Modality(e["query_modality"]), Modality(e["match_modality"]), e["score"])
        assert e["probability"] == pytest.approx(want, abs=1e-4)
    assert any(e["probability"] < 0.9 for e in runs["off"])
    assert all(e["probability"] >= 0.9 for e in runs["on"]) and len(runs["on"]) < len(runs["off"])
    # the bag's MatchEvents carry the same probability as events.jsonl
    from rosbags.highlevel import AnyReader

    from cmr_fusion_ros.bag.events import typestore_with_events

    with AnyReader([tmp_path / "on" / "matches"], default_typestore=typestore_with_events()) as reader:
        conns = [c for c in reader.connections if c.topic.endswith("/matches")]
        got = [e.probability for _, _, raw in reader.messages(connections=conns)
               for e in reader.deserialize(raw, conns[0].msgtype).events]
    assert got == pytest.approx([e["probability"] for e in runs["on"]], abs=1e-4)


def test_a_memory_node_pipeline_takes_the_calibration_from_the_cards(tmp_path: Path) -> None:
    """Split mode: the memory node loads no encoder, its events still carry the cards' probabilities (and
    policy.min_probability applies there too)."""
    from cmr_fusion_ros.core.config import FusionConfig
    from cmr_fusion_ros.core.encoder import load_encoders
    from cmr_fusion_ros.core.pipeline import FusionPipeline

    cfg = FusionConfig.from_dict({"encoders": {"models_dir": str(MODELS)},
                                  "memory": {"persistence": {"directory": str(tmp_path / "mem")}}})
    pipe = FusionPipeline.from_config(cfg, load_encoders=False)
    want = ScoreCalibration.from_cards(load_encoders(MODELS))
    assert pipe.encoders == {} and pipe.policy.calibration
    for q in Modality:
        for m in Modality:
            assert pipe.policy.calibration.probability(q, m, 0.6) == pytest.approx(want.probability(q, m, 0.6),
                                                                                   nan_ok=True)
    empty = tmp_path / "no_cards"
    empty.mkdir()
    cfg = FusionConfig.from_dict({"encoders": {"models_dir": str(empty)},
                                  "memory": {"persistence": {"directory": str(tmp_path / "mem2")}}})
    assert not FusionPipeline.from_config(cfg, load_encoders=False).policy.calibration  # no cards: min_score only
