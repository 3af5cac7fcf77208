"""fusion_node's start-up input check: its first frames go through core.domain.DomainMonitor (the ranges of the
model cards), which the node logs once when they look out of domain."""

from __future__ import annotations

import time

from sensor_msgs.msg import PointCloud2

from cmr_fusion_ros.core.domain import DomainMonitor, InputRanges
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import array_to_pointcloud2, make_header
from tests.ros.test_fusion_node import S, cloud_at, graph, wait_for  # noqa: F401  (graph: the shared fixture)


def test_first_frames_are_checked_against_the_training_ranges(graph):  # noqa: F811
    node, peer, _ = graph
    assert node.domain.ranges == {}  # stand-in encoders carry no model card: nothing to check against
    # the ranges of a model card trained on 1000-2000 points per scan; the test clouds have 50
    node.domain = DomainMonitor({Modality.LIDAR: InputRanges(Modality.LIDAR, {"points": (1000.0, 2000.0)})}, frames=3)
    lidar = peer.create_publisher(PointCloud2, "/lidar/points", 10)
    assert wait_for(lambda: lidar.get_subscription_count())
    for i in range(4):
        lidar.publish(array_to_pointcloud2(cloud_at(i), make_header(round(i * S), "lidar")))
        time.sleep(0.05)
    assert wait_for(lambda: Modality.LIDAR in node.domain.verdicts)
    v = node.domain.verdicts[Modality.LIDAR]
    assert not v.in_domain and v.frames == 3 and "points 50 outside the training range 1000..2000" in v.reasons()[0]
