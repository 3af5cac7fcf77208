"""The core never imports ROS: checked in a fresh interpreter (this test process may have rclpy loaded)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = """
import json, sys
import cmr_fusion_ros.core
import cmr_fusion_ros.core.pointcloud, cmr_fusion_ros.core.image, cmr_fusion_ros.core.radar
import cmr_fusion_ros.core.sensor_files
mods = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.') or m.endswith('_msgs') or '_msgs.' in m]
print(json.dumps(mods))
"""


def test_importing_core_leaves_rclpy_out():
    # The venv's python and the parent's environment (the ROS wheels' bootstrap needs both).
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=dict(os.environ),
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
