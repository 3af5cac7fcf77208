"""Readers of dataset files (PCD, DGP npz, radar CSV): real samples and broken inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cmr_fusion_ros.core.errors import BagError, ConversionError
from cmr_fusion_ros.core.radar import RadarFields, radar_array
from cmr_fusion_ros.core.sensor_files import read_dgp_npz, read_pcd, read_radar_csv


def test_binary_compressed_pcd(real_data):
    cloud = read_pcd(real_data / "pjlab-sensorscalib" / "lidar.pcd")
    assert cloud.dtype.names == ("x", "y", "z", "intensity", "ring", "timestamp")
    assert cloud.dtype["ring"] == np.uint16 and cloud.dtype["timestamp"] == np.float64
    assert cloud.shape == (94816,)
    assert np.isfinite(cloud["x"]).all() and cloud["ring"].max() < 128


def test_ascii_and_binary_pcd_agree(tmp_path):
    pts = np.array([(1.5, -2.25, 0.125, 7, 3), (0.0, 1.0, 2.0, 255, 1)],
                   dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4"), ("ring", "u2")])
    head = ("VERSION 0.7\nFIELDS x y z intensity ring\nSIZE 4 4 4 4 2\nTYPE F F F F U\nCOUNT 1 1 1 1 1\n"
            "WIDTH 2\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\n")
    (tmp_path / "a.pcd").write_text(head + "DATA ascii\n" + "\n".join(" ".join(str(v) for v in p) for p in pts.tolist()) + "\n")
    (tmp_path / "b.pcd").write_bytes((head + "DATA binary\n").encode() + pts.tobytes())
    for name in ("a.pcd", "b.pcd"):
        got = read_pcd(tmp_path / name)
        for f in pts.dtype.names:
            np.testing.assert_array_equal(got[f], pts[f], err_msg=f"{name}:{f}")


def test_broken_pcd_names_the_file(tmp_path):
    bad = tmp_path / "bad.pcd"
    bad.write_text("hello\n")
    with pytest.raises(BagError, match=r"bad\.pcd: not a PCD file: header has no FIELDS line"):
        read_pcd(bad)
    odd = tmp_path / "odd.pcd"
    odd.write_text("FIELDS x\nSIZE 3\nTYPE F\nCOUNT 1\nWIDTH 1\nHEIGHT 1\nPOINTS 1\nDATA ascii\n1\n")
    with pytest.raises(BagError, match=r"odd\.pcd: PCD field 'x': unsupported TYPE F SIZE 3"):
        read_pcd(odd)
    with pytest.raises(BagError, match="cannot read"):
        read_pcd(tmp_path / "missing.pcd")


def test_dgp_npz(real_data, tmp_path):
    f = next((real_data / "tri-dgp" / "scene_01").glob("*.npz"))
    cloud = read_dgp_npz(f)
    raw = np.load(f)["data"]
    assert cloud.shape == (raw.shape[0],)
    np.testing.assert_allclose(cloud["x"], raw[:, 0].astype(np.float32))
    np.savez(tmp_path / "wrong.npz", points=raw)
    with pytest.raises(BagError, match=r"wrong\.npz: npz has no 'data' array \(keys: \['points'\]\)"):
        read_dgp_npz(tmp_path / "wrong.npz")


def test_radar_csv_continental_and_delphi(real_data):
    conti = read_radar_csv(real_data / "pjlab-sensorscalib" / "front_radar.csv")
    assert conti.shape == (575,)
    assert {"x", "y", "z", "doppler", "rcs", "prob_of_exist", "object_type"} <= set(conti.dtype.names)
    np.testing.assert_allclose(conti["x"][:2], [206.6, 46.6], rtol=1e-6)
    report: dict = {}
    delphi = read_radar_csv(real_data / "pjlab-sensorscalib" / "front_radar_delphi.csv", report)
    r = np.hypot(delphi["x"], delphi["y"])
    np.testing.assert_allclose(r, delphi["track_range_m"], rtol=1e-5, atol=1e-4)
    # empty Delphi track slots (range 0, range rate 81.91) are not points at the sensor origin
    assert report["placeholder_rows"] > 0 and len(delphi) == report["rows"] - report["placeholder_rows"]
    assert (delphi["track_range_m"] > 0).all() and not np.isclose(delphi["doppler"], 81.91).any()
    conti_report: dict = {}
    read_radar_csv(real_data / "pjlab-sensorscalib" / "front_radar.csv", conti_report)
    assert conti_report == {"rows": 575, "placeholder_rows": 0}


def test_delphi_placeholder_rows_only_when_both_range_and_rate_say_so(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("track_range_m,track_angle_rad,track_range_rate_m_per_s\n0,0,81.91\n0,0,-1.5\n10,0.1,81.91\n12,0,2\n")
    report: dict = {}
    d = read_radar_csv(f, report)
    assert report == {"rows": 4, "placeholder_rows": 1}
    assert d["track_range_m"].tolist() == [0, 10, 12] and d["doppler"].tolist() == pytest.approx([-1.5, 81.91, 2])


def test_radar_csv_errors(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("a,b\n1,2\n3\n")
    with pytest.raises(BagError, match=r"r\.csv: line 3: 1 values, header has 2 columns"):
        read_radar_csv(f)
    f.write_text("a,b\n1,x\n")
    with pytest.raises(BagError, match=r"column 'b': non-numeric"):
        read_radar_csv(f)


def test_radar_field_mapping():
    cloud = np.zeros(3, dtype=[("px", "f8"), ("py", "f8"), ("v_r", "f4"), ("power", "i2")])
    cloud["v_r"] = [1, 2, 3]
    out = radar_array(cloud, RadarFields(x="px", y="py", z="", doppler="v_r", rcs="power"))
    assert out.dtype.names == ("x", "y", "z", "doppler", "rcs") and out["doppler"].tolist() == [1, 2, 3]
    with pytest.raises(ConversionError, match=r"fields\['doppler'\].*radar field for 'doppler' missing"):
        radar_array(cloud, RadarFields(x="px", y="py", z=""))
