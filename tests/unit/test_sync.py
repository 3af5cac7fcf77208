"""Time alignment into frame sets: complete, partial and timed-out sets; nothing is dropped."""

from __future__ import annotations

import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.sync import Frame, Synchronizer
from cmr_fusion_ros.core.types import Modality

C, L, R = Modality.CAMERA, Modality.LIDAR, Modality.RADAR
MS = 1_000_000


def f(mod, t_ms):
    return Frame(mod, f"/{mod.value}", mod.value, t_ms * MS, data=None)


def stamps(sets):
    return [(s.anchor_ns // MS, sorted((m.value, fr.stamp_ns // MS) for m, fr in s.frames.items()), s.complete) for s in sets]


def test_complete_set_emitted_at_once():
    sync = Synchronizer([C, L, R], tolerance_ns=30 * MS, timeout_ns=200 * MS)
    assert sync.push(f(L, 1000), 1000 * MS) == []
    assert sync.push(f(C, 1010), 1010 * MS) == []
    out = sync.push(f(R, 990), 1011 * MS)
    assert stamps(out) == [(1000, [("camera", 1010), ("lidar", 1000), ("radar", 990)], True)]
    assert sync.open_sets == 0


def test_frame_joins_nearest_anchor():
    sync = Synchronizer([C, L], tolerance_ns=50 * MS, timeout_ns=500 * MS)
    sync.push(f(L, 1000), 0)
    sync.push(f(L, 1040), 0)  # same modality: opens a second set
    out = sync.push(f(C, 1035), 0)
    assert stamps(out) == [(1040, [("camera", 1035), ("lidar", 1040)], True)]


def test_partial_set_when_missing_stream_moved_past():
    sync = Synchronizer([C, L, R], tolerance_ns=30 * MS, timeout_ns=10_000 * MS)
    sync.push(f(L, 1000), 0)
    sync.push(f(C, 1005), 0)
    # radar skipped this instant: its next frame is beyond the window, so the first set cannot fill any more.
    out = sync.push(f(R, 1100), 0)
    assert stamps(out) == [(1000, [("camera", 1005), ("lidar", 1000)], False)]


def test_silent_stream_times_out_and_the_set_is_still_processed():
    sync = Synchronizer([C, L, R], tolerance_ns=30 * MS, timeout_ns=200 * MS)
    sync.push(f(L, 1000), 1000 * MS)
    sync.push(f(C, 1000), 1000 * MS)
    assert sync.poll(1100 * MS) == []
    out = sync.poll(1200 * MS)
    assert stamps(out) == [(1000, [("camera", 1000), ("lidar", 1000)], False)]


def test_complete_newer_set_does_not_wait_behind_an_older_partial_one():
    sync = Synchronizer([C, L], tolerance_ns=10 * MS, timeout_ns=1000 * MS)
    sync.push(f(L, 1000), 0)
    out = sync.push(f(L, 1100), 0)
    assert out == []
    out = sync.push(f(C, 1100), 0)  # completes the 1100 set; camera is past 1000+10 so the old set closes too
    assert [s.anchor_ns // MS for s in out] == [1000, 1100]
    assert [s.complete for s in out] == [False, True]


def test_flush_returns_everything_and_single_modality_sets_are_complete():
    sync = Synchronizer([L], tolerance_ns=0, timeout_ns=0)
    assert len(sync.push(f(L, 5), 0)) == 1
    sync2 = Synchronizer([C, L], tolerance_ns=10 * MS, timeout_ns=100 * MS)
    sync2.push(f(C, 1), 0)
    sync2.push(f(C, 500), 0)
    assert [s.anchor_ns // MS for s in sync2.flush()] == [1, 500]
    assert sync2.open_sets == 0


def test_bounded_open_sets():
    sync = Synchronizer([C, L], tolerance_ns=1 * MS, timeout_ns=10**12, max_open=3)
    out = []
    for t in range(10):
        out += sync.push(f(C, t * 100), 0)
    assert sync.open_sets <= 3 and len(out) == 7


def test_config_errors():
    with pytest.raises(ConfigError, match="sync.modalities"):
        Synchronizer([], 0, 0)
    with pytest.raises(ConfigError, match=r"sync.timeout_s.*>= sync.tolerance_s"):
        Synchronizer([C], 10 * MS, 1 * MS)
    with pytest.raises(ConfigError, match="sync.modalities"):
        Synchronizer([C], 0, 0).push(f(R, 1), 0)
