"""Scenario generator: a procedural town seen by camera, LiDAR and radar, recorded as rosbag2 (no ROS imports).

See ``cmr_fusion_ros/sim/README.md`` for the bag conventions (topics, frames, stamps, session layout).

Public entry points: :func:`generate_town`, :func:`plan_session` / :func:`simulate_session` (numpy samples),
:func:`simulate_dataset` (bags on disk), :class:`SimConfig` / :func:`load_sim_config`.
"""

from cmr_fusion_ros.sim.config import SimConfig, load_sim_config
from cmr_fusion_ros.sim.recording import TOPICS, record_session, session_dir, simulate_dataset
from cmr_fusion_ros.sim.session import Sample, SensorKind, plan_session, session_epoch_ns, simulate_session
from cmr_fusion_ros.sim.town import Town, generate_town

__all__ = [
    "TOPICS",
    "Sample",
    "SensorKind",
    "SimConfig",
    "Town",
    "generate_town",
    "load_sim_config",
    "plan_session",
    "record_session",
    "session_dir",
    "session_epoch_ns",
    "simulate_dataset",
    "simulate_session",
]
