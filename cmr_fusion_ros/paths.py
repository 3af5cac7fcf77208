"""Where the package's installed data (config, models, launch, bags) lives.

Next to the code when it runs from a source checkout (an editable install too); else found through the ament index
when the package is installed (pip or colcon). Never the current working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["share_dir", "config_file", "models_dir", "source_root"]

PACKAGE = "cmr_fusion_ros"


def source_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _installed_share() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:  # no ROS at all
        get_package_share_directory = None
    if get_package_share_directory is not None:
        try:
            return Path(get_package_share_directory(PACKAGE))
        except (LookupError, OSError):  # not registered, or AMENT_PREFIX_PATH unset
            pass
    candidate = Path(sys.prefix) / "share" / PACKAGE  # a pip install into this environment
    return candidate if candidate.is_dir() else None


def _is_checkout(root: Path) -> bool:
    return (root / "package.xml").is_file() and (root / "config").is_dir()


def share_dir() -> Path:
    """The data of the code that runs: the source tree when this package is imported from a checkout (e.g. with the
    checkout on PYTHONPATH beside an older install, whose config and model cards may not match this code), else the
    installed share/cmr_fusion_ros folder."""
    if _is_checkout(source_root()):
        return source_root()
    share = _installed_share()
    return share if share is not None and (share / "config").is_dir() else source_root()


def config_file(name: str) -> Path:
    """A file of the package's config/ folder (:func:`share_dir`'s, else the source tree's)."""
    for root in (share_dir(), source_root()):
        if (root / "config" / name).is_file():
            return root / "config" / name
    return share_dir() / "config" / name


def models_dir() -> Path:
    """The shipped models (:func:`share_dir`'s, else the source tree's)."""
    for root in (share_dir(), source_root()):
        if any((root / "models").glob("*.onnx")):
            return root / "models"
    return share_dir() / "models"
