"""The core: types, config, errors, preprocessing, encoders, memory, retrieval. Never imports rclpy or *_msgs."""

from cmr_fusion_ros.core.errors import (
    BagError,
    CmrFusionError,
    ConfigError,
    ConversionError,
    MemoryStoreError,
    ModelError,
)
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = [
    "BagError",
    "CmrFusionError",
    "ConfigError",
    "ConversionError",
    "MemoryStoreError",
    "ModelError",
    "Modality",
    "Pose",
]
