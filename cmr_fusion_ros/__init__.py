"""cmr_fusion_ros: cross-modal retrieval (camera, LiDAR, radar) with ROS 2 match events.

Layers: ``core`` (no ROS), ``ros`` (the only rclpy importers), ``bag``, ``sim``, ``training`` (the only torch
importers), ``eval``; ``cli`` is the single command-line entry point.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
