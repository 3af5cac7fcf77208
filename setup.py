"""ament_python package cmr_fusion_ros (builds with colcon in a ROS 2 workspace, or with pip in a venv)."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "cmr_fusion_ros"
HERE = Path(__file__).parent


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing every file under `folder` into share/<package>/<folder>/..."""
    entries: dict[str, list[str]] = {}
    for path in sorted(HERE.joinpath(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(HERE)
            entries.setdefault(f"share/{PACKAGE}/{rel.parent.as_posix()}", []).append(rel.as_posix())
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_tree("launch"),
        *_tree("config"),
        *_tree("models"),
        *_tree("bags"),
    ],
    python_requires=">=3.11",
    install_requires=[
        "numpy>=2",
        "pyyaml",
        "opencv-python-headless",
        "rosbags>=0.10",
        "faiss-cpu",
        "open3d-cpu",
        "tqdm",
        "matplotlib",
        "psutil",
    ],
    extras_require={
        # exactly one onnxruntime build (both install the same `onnxruntime` module): the CPU one, or the GPU one
        # (CUDA/TensorRT execution providers; it runs on the CPU too). pip cannot swap a base requirement for an
        # extra, so neither is in install_requires: install .[cpu] or .[gpu] (scripts/setup.sh: EXTRAS).
        "cpu": ["onnxruntime"],
        "gpu": ["onnxruntime-gpu"],
        # ROS 2 Kilted from PyPI; in a ROS workspace these come from the distribution instead.
        "ros": [
            "ros-rclpy",
            "ros-sensor-msgs",
            "ros-std-msgs",
            "ros-geometry-msgs",
            "ros-nav-msgs",
            "ros-visualization-msgs",
            "ros-diagnostic-msgs",
            "ros-rosgraph-msgs",
            "ros-rmw-fastrtps-cpp",
            "ros-ament-index-python",
        ],
        "train": ["torch==2.13.0", "onnx", "onnxscript"],
        "test": ["pytest", "hypothesis"],
    },
    zip_safe=True,
    maintainer="cmr_fusion_ros developers",
    maintainer_email="dev@cmr-fusion.invalid",
    description="Cross-modal retrieval for camera, radar and LiDAR with ROS 2 match events",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "cmr-fusion = cmr_fusion_ros.cli:main",
            "fusion_node = cmr_fusion_ros.ros.fusion_node:main",
            "encoder_node = cmr_fusion_ros.ros.encoder_node:main",
            "memory_node = cmr_fusion_ros.ros.memory_node:main",
        ],
    },
)
