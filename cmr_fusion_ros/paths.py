"""Where the package's installed data (config, models, launch, bags) lives.

Found through the ament index when the package is installed (pip or colcon), else next to the source tree.
Never the current working directory.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["share_dir", "config_file", "models_dir", "source_root"]

PACKAGE = "cmr_fusion_ros"


def source_root() -> Path:
    return Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # no ROS at all: a source checkout
        return source_root()
    try:
        share = Path(get_package_share_directory(PACKAGE))
    except PackageNotFoundError:
        return source_root()
    # An editable install registers the package but the data may live in the source tree.
    return share if (share / "config").is_dir() else source_root()


def config_file(name: str) -> Path:
    return share_dir() / "config" / name


def models_dir() -> Path:
    return share_dir() / "models"
