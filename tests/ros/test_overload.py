"""Overload in-process: the camera at twice the rate a slow (sleeping) encoder manages. Latest-wins queues keep the
processed frames recent (bounded lag in frames, so bounded latency), every drop is counted, nothing grows."""

from __future__ import annotations

import threading
import time

from cmr_fusion_ros.core.types import Modality

from tests.ros import stress_graph as g
from tests.unit import stress_messages as sm

C = Modality.CAMERA
ENCODE_S = 0.05  # the encoder manages 20 Hz
RATE_HZ = 40.0
FRAMES = 120
QUEUE = 2


def test_camera_at_twice_the_encoder_rate(tmp_path):
    published = [0]
    lags = []
    inbox_sizes = []

    holder = {}

    def on_encode(data):  # which frame is being encoded, against how many the node had received by then
        place = sm.expected_place(data)
        n = holder["node"].stats[C].received  # reliable: received in publishing order
        index = max(i for i in range(n) if i % 25 == place)
        lags.append(n - 1 - index)

    overrides = g.base_overrides(tmp_path, **{"streams.lidar.enabled": False, "streams.radar.enabled": False,
                                              "streams.camera.queue_size": QUEUE,
                                              "streams.camera.depth": FRAMES})  # DDS keeps all: drops are the node's
    with g.node_graph(overrides, {C: g.PlaceEncoder(ENCODE_S, on_encode)}) as (node, peer, got):
        holder["node"] = node
        pubs = g.publishers(peer, [C])
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                inbox_sizes.append(len(node.streams[C].queue))
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        for i in range(FRAMES):
            pubs[C].publish(g.to_ros(sm.image_of(i % 25), (1 + i) * g.S // 40, "camera"))
            published[0] = i + 1
            time.sleep(max(0.0, t0 + (i + 1) / RATE_HZ - time.monotonic()))
        stats = node.stats[C]
        assert g.wait_for(lambda: stats.received == FRAMES and stats.processed + stats.dropped == FRAMES, 20.0), \
            stats.summary()
        stop.set()
        sampler.join()
        summary = g.wait_for(lambda: (g.stream_status(got, C) or {}).get("dropped") == str(stats.dropped), 5.0)
        assert summary, g.stream_status(got, C)
    assert stats.dropped >= FRAMES // 4, stats.summary()  # about half cannot be encoded in time
    # how many get through depends on how evenly DDS delivers (bursts fill the 2-frame queue at once)
    assert stats.processed >= 10
    assert max(inbox_sizes) <= QUEUE  # the queue is bounded
    # latest wins: each frame encoded was among the newest the node had received (the queue plus the callback
    # that may be adding one while the worker takes another); how late DDS delivers is not the node's to bound
    assert lags and max(lags) <= QUEUE + 2, lags
    assert len(stats.latencies_ms) <= stats.latencies_ms.maxlen
