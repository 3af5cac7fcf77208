"""Where the package data comes from: the checkout the code runs from, else the installed share folder."""

from __future__ import annotations

from pathlib import Path

from cmr_fusion_ros import paths

REPO = Path(__file__).resolve().parents[2]


def test_code_from_a_checkout_uses_the_checkouts_config_and_models() -> None:
    # even beside an older install (whose config keys and model cards may not match this code)
    assert paths.share_dir() == REPO
    assert paths.config_file("fusion.yaml") == REPO / "config" / "fusion.yaml"
    assert paths.models_dir() == REPO / "models"


def test_installed_code_uses_the_installed_share(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site-packages"  # a real install: no package.xml or config beside the package
    share = tmp_path / "share" / "cmr_fusion_ros"
    (share / "config").mkdir(parents=True)
    (share / "config" / "fusion.yaml").write_text("{}\n")
    (share / "models").mkdir()
    (share / "models" / "camera_encoder.onnx").write_bytes(b"x")
    monkeypatch.setattr(paths, "source_root", lambda: site)
    monkeypatch.setattr(paths, "_installed_share", lambda: share)
    assert paths.share_dir() == share
    assert paths.config_file("fusion.yaml") == share / "config" / "fusion.yaml"
    assert paths.models_dir() == share / "models"
