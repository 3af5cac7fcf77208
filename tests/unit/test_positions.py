"""Message positions from an MCAP bag's index (bag.positions): the same messages, bytes and order as rosbags'
reader gives; layouts it does not read exactly give None (the caller reads through rosbags); a damaged record or
index is a BagError naming the file and the byte."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_typestore

from cmr_fusion_ros.bag.positions import MessageReader, message_positions
from cmr_fusion_ros.core.errors import BagError

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "bags" / "sample_town" / "session_00"


def _through_rosbags(paths: list[Path]) -> list[tuple[str, int, bytes]]:
    with AnyReader(paths) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages(connections=reader.connections)]


def test_raw_messages_by_index_and_through_rosbags_are_the_same(bag, monkeypatch):
    import cmr_fusion_ros.bag.positions as positions

    with AnyReader([bag]) as reader:
        by_index = [(c.topic, t, bytes(raw)) for c, t, raw in positions.raw_messages(reader, reader.connections)]
    monkeypatch.setattr(positions, "message_positions", lambda reader, conns: None)
    with AnyReader([bag]) as reader:
        fallback = [(c.topic, t, bytes(raw)) for c, t, raw in positions.raw_messages(reader, reader.connections)]
    assert len(by_index) == 120 and by_index == fallback == _through_rosbags([bag])


def _through_positions(paths: list[Path]) -> list[tuple[str, int, bytes]] | None:
    with AnyReader(paths) as reader:
        positions = message_positions(reader, reader.connections)
        if positions is None:
            return None
        with MessageReader(positions.files) as at:
            return [(c.topic, t, bytes(at.read(where))) for c, t, where in positions]


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("positions") / "bag"
    ts = get_typestore(Stores.ROS2_KILTED)
    String = ts.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        a = w.add_connection("/a", "std_msgs/msg/String", typestore=ts)
        b = w.add_connection("/b", "std_msgs/msg/String", typestore=ts)
        for i in range(120):
            t = 1_000 + (i // 3) * 10 + (5 if i % 7 == 0 else 0) - (30 if i % 11 == 0 else 0)
            w.write(a if i % 2 else b, t, ts.serialize_cdr(String(data=f"{i}:" + "x" * 40_000), "std_msgs/msg/String"))
    return path


def test_same_messages_bytes_and_order_as_rosbags(bag):
    with AnyReader([bag]) as reader:
        assert len(reader.readers[0].storage.storages[0].chunks) > 3  # the order crosses chunks
    want = _through_rosbags([bag])
    assert len(want) == 120 and len({t for _, t, _ in want}) < 120  # equal log times are in there
    assert _through_positions([bag]) == want


@pytest.mark.parametrize("path", [SAMPLE, SAMPLE / "session_00.mcap"], ids=["bag folder", "mcap file"])
def test_the_shipped_sample_bag_reads_the_same(path):
    got = _through_positions([path])
    assert got is not None and len(got) > 1000 and got == _through_rosbags([path])


def test_only_the_asked_connections(bag):
    with AnyReader([bag]) as reader:
        positions = message_positions(reader, [c for c in reader.connections if c.topic == "/a"])
        assert positions is not None and len(positions) == 60
        assert {c.topic for c, _, _ in positions} == {"/a"}
        assert list(positions.log_ns) == sorted(positions.log_ns)


def test_several_bags_merge_by_log_time(bag, tmp_path):
    both = [bag, SAMPLE]
    got = _through_positions(both)
    want = _through_rosbags(both)
    assert got is not None and [t for _, t, _ in got] == [t for _, t, _ in want]
    assert sorted(got) == sorted(want)  # (rosbags orders equal log times of different bags by object address)


@pytest.mark.parametrize("storage, compression", [
    (StoragePlugin.SQLITE3, CompressionMode.NONE),
    (StoragePlugin.MCAP, CompressionMode.MESSAGE),
    (StoragePlugin.MCAP, CompressionMode.STORAGE),
])
def test_other_layouts_are_left_to_rosbags(tmp_path, storage, compression):
    path = tmp_path / "bag"
    ts = get_typestore(Stores.ROS2_KILTED)
    w = Writer(path, version=9, storage_plugin=storage)
    if compression != CompressionMode.NONE:
        w.set_compression(compression, CompressionFormat.ZSTD)
    with w:
        conn = w.add_connection("/a", "std_msgs/msg/String", typestore=ts)
        w.write(conn, 5, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    assert _through_positions([path]) is None
    assert len(_through_rosbags([path])) == 1


def _first_record(bag: Path) -> tuple[Path, int]:
    with AnyReader([bag]) as reader:
        positions = message_positions(reader, reader.connections)
        return Path(positions.files[0]), int(positions.offset[0])


def _copy(bag: Path, to: Path) -> Path:
    to.mkdir()
    for f in bag.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


def test_a_damaged_record_is_an_error_naming_file_and_byte(bag, tmp_path):
    copy = _copy(bag, tmp_path / "copy")
    file, offset = _first_record(copy)
    data = bytearray(file.read_bytes())
    data[offset + 9:offset + 11] = struct.pack("<H", 77)  # another channel id
    file.write_bytes(bytes(data))
    with AnyReader([copy]) as reader:
        positions = message_positions(reader, reader.connections)
        c, t, where = next(iter(positions))
        with MessageReader(positions.files) as at, pytest.raises(BagError) as err:
            at.read(where)
    assert str(file) in str(err.value) and f"byte {offset}" in str(err.value)


def test_a_damaged_index_is_an_error(bag, tmp_path):
    copy = _copy(bag, tmp_path / "copy")
    with AnyReader([copy]) as reader:
        chunk = reader.readers[0].storage.storages[0].chunks[0]
        index_at = next(iter(chunk.message_index_offsets.values()))
        file = reader.readers[0].storage.storages[0].path
    data = bytearray(Path(file).read_bytes())
    data[index_at] = 0x42  # not a message index record
    Path(file).write_bytes(bytes(data))
    with AnyReader([copy]) as reader, pytest.raises(BagError) as err:
        message_positions(reader, reader.connections)
    assert str(file) in str(err.value) and f"byte {index_at}" in str(err.value)


@pytest.mark.parametrize("look_ahead", [0, 2])
def test_process_stops_with_a_clear_error_at_a_damaged_sensor_record(tmp_path, look_ahead):
    from cmr_fusion_ros.bag.offline import process_bags
    from cmr_fusion_ros.core.config import FusionConfig

    copy = _copy(SAMPLE, tmp_path / "copy")
    with AnyReader([copy]) as reader:
        positions = message_positions(reader, reader.connections)
        i = next(i for i, (c, _, _) in enumerate(positions) if c.topic.startswith("/camera/") and i > 100)
        file, offset = Path(positions.files[int(positions.file[i])]), int(positions.offset[i])
    data = bytearray(file.read_bytes())
    data[offset + 17:offset + 25] = struct.pack("<Q", 1)  # another log time than the index says
    file.write_bytes(bytes(data))
    config = FusionConfig.from_dict({"memory": {"persistence": {"directory": ""}}})
    with pytest.raises(BagError) as err:
        process_bags([copy], config, progress=False, look_ahead=look_ahead)
    assert str(copy) in str(err.value) and "unreadable after" in str(err.value) and f"byte {offset}" in str(err.value)
