"""Fuzz fusion_node in-process: thousands of malformed Image / PointCloud2 messages (hypothesis-generated) interleaved
with a valid drive. The node stays up, publishes exactly the events the valid frames give on their own, counts every
rejected message per stream in /diagnostics, and logs the reasons throttled."""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as seed_
from hypothesis import strategies as st

from cmr_fusion_ros.core.memory import SceneMemory
from cmr_fusion_ros.core.decode import Frame, decode_sensor
from cmr_fusion_ros.core.pipeline import FusionPipeline
from cmr_fusion_ros.core.types import Modality
from cmr_fusion_ros.ros.conversions import stamp_to_ns

from tests.ros import stress_graph as g
from tests.unit import stress_messages as sm

MODS = (Modality.CAMERA, Modality.LIDAR, Modality.RADAR)
# a drive through 25 places, then a revisit of places 3..7
DRIVE = [(i * g.S + g.S, i) for i in range(25)] + [((50 + k) * g.S, 3 + k) for k in range(5)]
MALFORMED_PER_GAP = 15  # on average: about 1350 malformed messages in all


def draw_pool(strategy, n: int, seed: int) -> list:
    """``n`` examples of ``strategy`` as hypothesis generates them (one small example each, no shrinking)."""
    pool: list = []

    @seed_(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(item):
        pool.append(item)

    collect()
    return pool


def test_node_survives_malformed_messages_and_counts_them(tmp_path):
    rng = np.random.default_rng(8)
    malformed = draw_pool(st.tuples(st.sampled_from(MODS), st.integers(0, 100 * g.S)).flatmap(
        lambda t: sm.malformed(t[0]).map(lambda rm: (t[0], t[1], rm[1], rm[0]))), 1500, 1)
    disguises = {m: draw_pool(st.integers(0, 24).flatmap(lambda p, m=m: sm.valid(m, p).map(lambda d: (p, d[1]))),
                              200, 2) for m in MODS}
    # the program: valid frames (in harmless disguises) with malformed messages in every gap
    program = []  # (modality, stamp_ns, message, bad reason or "")
    it = iter(malformed)
    for stamp, place in DRIVE:
        for m in MODS:
            for _ in range(int(rng.integers(0, 2 * MALFORMED_PER_GAP))):
                item = next(it, None)
                if item is not None:
                    program.append(item)
            same = [msg for p, msg in disguises[m] if p == place] or [sm.valid_plain(m, place)]
            program.append((m, stamp, same[int(rng.integers(0, len(same)))], ""))
    bad = {m: sum(1 for pm, _, _, r in program if pm is m and r) for m in MODS}
    good = {m: sum(1 for pm, _, _, r in program if pm is m and not r) for m in MODS}
    assert sum(bad.values()) >= 1000

    extra = {f"streams.{m.value}.{k}": 1000 for m in MODS for k in ("depth", "queue_size")}
    with g.node_graph(g.base_overrides(tmp_path, **extra)) as (node, peer, got):
        pubs = g.publishers(peer, MODS, depth=1000)
        for i, (m, stamp, msg, _) in enumerate(program):
            pubs[m].publish(g.to_ros(msg, stamp))
            if i % 200 == 199:
                time.sleep(0.05)

        def settled():
            for m in MODS:
                s = g.stream_status(got, m)
                if not s or int(s["bad_messages"]) != bad[m] or int(s["processed"]) != good[m]:
                    return False
            return True

        assert g.wait_for(settled, timeout=60.0), {m.value: g.stream_status(got, m) for m in MODS}
        for m in MODS:
            s = g.stream_status(got, m)
            assert int(s["received"]) == bad[m] + good[m] and int(s["dropped"]) == 0
            assert s["last_bad_reason"].startswith("sensor_msgs/"), s["last_bad_reason"]
        assert all(st.worker.is_alive() for st in node.streams.values()) and not node.problems

        # the events are exactly those of the valid frames alone, through a fresh pipeline
        mc = node.config.memory
        ram = dataclasses.replace(mc, persistence=dataclasses.replace(mc.persistence, directory=""))
        ref = FusionPipeline(node.config, {m: g.PlaceEncoder() for m in MODS}, SceneMemory(ram), session="test")
        expected = set()
        for stamp, place in DRIVE:
            for m in MODS:
                out = ref.process_frame(Frame(m, g.TOPICS[m], "sensor", stamp,
                                              decode_sensor(m, sm.valid_plain(m, place), compressed=False)))
                expected |= {(e.query_modality.value, e.match_modality.value, e.query_stamp_ns, e.match_stamp_ns)
                             for e in out.events}
        assert len(expected) == 6  # one per modality pair: the debounce makes the revisit one event
        assert g.wait_for(lambda: sum(len(a.events) for a in got["matches"]) >= len(expected), 10.0)
        time.sleep(0.3)
        published = [(e.query_modality, e.match_modality, stamp_to_ns(e.header.stamp), stamp_to_ns(e.match_stamp))
                     for a in got["matches"] for e in a.events]
        assert sorted(published) == sorted(expected)

        # throttled warnings (one call site, 2 s throttle) name the stream, the message type, the field and the reason
        pattern = re.compile(r"bad (camera|lidar|radar) message on /\S+: sensor_msgs/(Image|PointCloud2)\.\S+: .+")
        assert g.wait_for(lambda: any(pattern.fullmatch(log.msg) for log in got["logs"]), 5.0), \
            [log.msg for log in got["logs"]]
        warnings = [log for log in got["logs"] if "bad " in log.msg and " message on " in log.msg]
        assert len(warnings) < sum(bad.values()) / 10  # throttled
