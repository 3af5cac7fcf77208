"""The two builds describe the same package: pip (setup.py) and colcon (package.xml + CMakeLists.txt)."""

from __future__ import annotations

import re
import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[2]
# rosdep key (rosdistro rosdep/python.yaml; the pip ones resolve to a pip install) -> the PyPI name setup.py uses.
# python3-faiss: ros/rosdistro#46631 (apt python3-faiss, pip faiss-cpu on bookworm/noble); python3-rosbags-pip:
# ros/rosdistro#37795.
ROSDEP_TO_PYPI = {
    "python3-numpy": "numpy", "python3-yaml": "pyyaml", "python3-opencv": "opencv-python-headless",
    "python3-rosbags-pip": "rosbags", "python3-onnxruntime-pip": "onnxruntime", "python3-faiss": "faiss-cpu",
    "python3-open3d-pip": "open3d-cpu", "python3-tqdm": "tqdm", "python3-matplotlib": "matplotlib",
    "python3-psutil": "psutil", "python3-pytest": "pytest", "python3-hypothesis": "hypothesis",
}


def _setup_kwargs() -> dict:
    seen: dict = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: seen.update(kw)
    try:
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real
    return seen


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower()


def test_python_rosdep_keys_are_the_pip_requirements() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    keys = [e.text for e in root if e.tag in ("exec_depend", "test_depend") and e.text.startswith("python3-")]
    assert set(keys) <= set(ROSDEP_TO_PYPI), set(keys) - set(ROSDEP_TO_PYPI)
    kw = _setup_kwargs()
    # onnxruntime: rosdep's python3-onnxruntime-pip is the CPU build, setup.py's extra "cpu" (not install_requires)
    pip = {_name(r) for r in kw["install_requires"] + kw["extras_require"]["cpu"] + kw["extras_require"]["test"]}
    assert {ROSDEP_TO_PYPI[k] for k in keys} == pip


def test_colcon_build_installs_what_pip_installs() -> None:
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.find("export/build_type").text == "ament_cmake"
    assert "cmr_fusion_msgs" not in [e.text for e in root]  # built here: not a rosdep key, not a colcon package
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "add_subdirectory(cmr_fusion_msgs)" in cmake
    scripts = dict(s.split(" = ") for s in _setup_kwargs()["entry_points"]["console_scripts"])
    nodes = re.search(r"foreach\(_node ([^)]*)\)", cmake).group(1).split()
    assert {n: f"cmr_fusion_ros.ros.{n}:main" for n in nodes} == {k: v for k, v in scripts.items() if k != "cmr-fusion"}
    assert scripts["cmr-fusion"] == "cmr_fusion_ros.cli:main" and 'cmr_fusion_script(cmr-fusion "${PROJECT_NAME}.cli"' in cmake
    data = re.search(r"install\(DIRECTORY ([^\n]*) DESTINATION", cmake).group(1).split()
    shared = {path.split("/")[2] for path, _ in _setup_kwargs()["data_files"] if path.startswith("share/cmr_fusion_ros/")}
    assert set(data) == shared
