"""scripts/pool_recall.py: recall@1 pooled over eval JSON files (hits over counted queries), refusals."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pool_recall.py"
pool_recall = runpy.run_path(str(SCRIPT))


def _eval_json(path: Path, recalls: dict[str, tuple[float, int]], radius: float = 10.0, yaw: float | None = 30.0):
    pairs = {p: {"recall@1": r, "num_counted": n, "radius_m": radius, "max_yaw_deg": yaw} for p, (r, n) in recalls.items()}
    path.write_text(json.dumps({"pairs": pairs}))
    return path


def test_pooled_recall_weighs_towns_by_their_queries(tmp_path, capsys):
    a = _eval_json(tmp_path / "a.json", {"camera->lidar": (0.5, 10), "lidar->camera": (1.0, 10)})
    b = _eval_json(tmp_path / "b.json", {"camera->lidar": (1.0, 30), "lidar->camera": (0.0, 30)})
    pooled = pool_recall["pool"]([a, b])
    assert pooled["camera->lidar"] == {"recall@1": pytest.approx(35 / 40), "hits": 35, "counted": 40}
    assert pooled["lidar->camera"]["recall@1"] == pytest.approx(10 / 40)  # not the mean of 1.0 and 0.0
    assert pool_recall["main"]([str(a), str(b), "--label", "m"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["m", "0.875", "0.250"] and out[1].split()[-1] == "0.562"  # cross mean of the two
    assert out[2].split()[1:3] == ["40", "40"] and "(2 files)" in out[2]


def test_pool_refuses_other_settings_and_non_eval_files(tmp_path, capsys):
    a = _eval_json(tmp_path / "a.json", {"camera->lidar": (0.5, 10)})
    b = _eval_json(tmp_path / "b.json", {"camera->lidar": (0.5, 10)}, yaw=None)
    with pytest.raises(ValueError, match="b.json: radius / heading limit"):
        pool_recall["pool"]([a, b])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"events": []}))
    assert pool_recall["main"]([str(a), str(bad)]) == 2
    assert "bad.json: no 'pairs'" in capsys.readouterr().err
    assert pool_recall["main"]([str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
