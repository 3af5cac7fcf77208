"""The PostgreSQL + pgvector scene memory against a real server (``cmr-fusion memory-server`` in tmp_path, no mocks):
schema, the same answers as the exact local store, concurrent writers, faults, who may do what."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from cmr_fusion_ros.core.errors import ConfigError
from cmr_fusion_ros.core.memory import MemoryConfig, SceneMemory, open_memory
from cmr_fusion_ros.core.memory.postgres import PostgresMemory, hnsw_index_name
from cmr_fusion_ros.core.types import Modality, Pose
from tests.pg_server import PgServer, pg_server, pg_uri, server_dir, with_db  # noqa: F401

DIM = 16
S = 1_000_000_000


def pg_config(uri: str, robot: str = "car1", backend: str = "exact", **postgres) -> MemoryConfig:
    return MemoryConfig.from_dict({
        "dim": DIM, "store": "postgres", "robot_id": robot, "admission": {"enabled": False},
        "index": {"backend": backend, "hnsw_m": 16, "hnsw_ef_construction": 64, "hnsw_ef_search": 64},
        "postgres": {"uri": uri, "retry_interval_s": 0.1, **postgres},
    })


def fill(mem, rng, n_per=300) -> None:
    """Three modalities, two sessions, stamps 0..n s, poses."""
    for j, mod in enumerate(Modality):
        for session in ("drive_a", "drive_b"):
            vecs = rng.normal(size=(n_per, DIM)).astype(np.float32)
            stamps = (np.arange(n_per) + j * 1000) * S
            poses = np.column_stack([rng.uniform(-50, 50, (n_per, 3)), np.zeros((n_per, 3)), np.ones(n_per)])
            mem.add_batch(vecs, mod, f"/{mod.value}", f"{mod.value}_link", stamps, poses, session=session)


# --- config -------------------------------------------------------------------------------------------------------


def test_config_refuses_a_password_in_the_uri_and_hides_it():
    with pytest.raises(ConfigError, match="memory.postgres.uri") as err:
        MemoryConfig.from_dict({"store": "postgres", "postgres": {"uri": "postgresql://car1:s3cret@db/fleet"}})
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match="memory.postgres.uri"):
        MemoryConfig.from_dict({"store": "postgres", "postgres": {"uri": "postgresql://db/fleet?password=x"}})


@pytest.mark.parametrize("memory, key", [
    ({"store": "postgres"}, "memory.postgres.uri"),
    ({"store": "postgres", "postgres": {"uri": "mysql://db"}}, "memory.postgres.uri"),
    ({"store": "sqlite"}, "memory.store"),
    ({"store": "postgres", "postgres": {"uri": "postgresql://db/x"}, "capacity": {"max_entries": 10}},
     "memory.capacity.max_entries"),
    ({"store": "postgres", "postgres": {"uri": "postgresql://db/x"}, "index": {"backend": "faiss_ivf"}},
     "memory.index.backend"),
])
def test_config_names_the_bad_key(memory, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MemoryConfig.from_dict(memory)


def test_bad_uri_is_one_clear_error_naming_the_parameter(tmp_path):
    cfg = pg_config(f"postgresql://postgres@/postgres?host={tmp_path}&port=1", connect_timeout_s=1)
    with pytest.raises(ConfigError, match=r"memory\.postgres\.uri.*reachable PostgreSQL server"):
        PostgresMemory(cfg)


def test_a_database_without_pgvector_is_one_clear_error(pg_server):
    with psycopg.connect(pg_server.uri, autocommit=True) as conn:
        conn.execute("CREATE ROLE plain LOGIN")
        conn.execute("CREATE DATABASE novector OWNER plain")
    with pytest.raises(ConfigError, match=r"memory\.postgres\.uri.*pgvector"):
        PostgresMemory(pg_config(with_db(pg_server.uri, "novector", user="plain")))


# --- schema and contents ------------------------------------------------------------------------------------------


def test_schema_version_table_and_hnsw_index(pg_uri):
    with PostgresMemory(pg_config(pg_uri, backend="faiss_hnsw")):
        pass
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT version, dim FROM cmr_schema").fetchall() == [(1, DIM)]
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'cmr_entries'")}
        assert {"id", "robot", "session", "modality", "topic", "frame_id", "stamp_ns", "pose", "emb"} <= cols
        for code, mod in enumerate(Modality):  # one partial index per modality
            idx = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                               (hnsw_index_name(16, 64, mod),)).fetchone()[0]
            assert "hnsw" in idx and "vector_ip_ops" in idx and f"(modality = {code})" in idx
        assert conn.execute("SELECT to_regclass(%s)", (hnsw_index_name(16, 64),)).fetchone()[0] is None
    with PostgresMemory(pg_config(pg_uri)):  # reopening migrates nothing and keeps one version row
        pass
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT count(*) FROM cmr_schema").fetchone()[0] == 1
    with pytest.raises(ConfigError, match=r"memory\.dim"):
        PostgresMemory(MemoryConfig.from_dict({"dim": DIM * 2, "store": "postgres", "postgres": {"uri": pg_uri}}))


def test_an_entry_keeps_everything_the_local_store_keeps_plus_the_robot(pg_uri):
    rng = np.random.default_rng(1)
    v = rng.normal(size=DIM).astype(np.float32)
    with PostgresMemory(pg_config(pg_uri, robot="car7")) as mem:
        e = mem.add(v, Modality.RADAR, "/radar", "radar_link", 12 * S, Pose(1, 2, 3, 0, 0, 0.6, 0.8), "drive_x")
        assert e.id > 0 and mem.get(e.id) == e  # from the queue or the database
        assert mem.flush() == 0
        got = mem.get(e.id)
    assert got == e and got.robot == "car7" and got.session == "drive_x"
    np.testing.assert_allclose(got.vector, v / np.linalg.norm(v), atol=1e-6)


@pytest.mark.parametrize("filters", [
    {},
    {"modalities": ["lidar"]},
    {"modalities": ["camera", "radar"], "exclude_newer_than_ns": 1100 * S},
    {"exclude_session": "drive_a", "min_score": 0.3},
    {"modalities": ["radar"], "exclude_session": "drive_b", "exclude_newer_than_ns": 2150 * S},
])
def test_same_top_k_ids_as_the_exact_local_store(pg_uri, filters):
    rng = np.random.default_rng(2)
    local = SceneMemory(MemoryConfig.from_dict({"dim": DIM, "admission": {"enabled": False}}))
    with PostgresMemory(pg_config(pg_uri)) as pgm:
        fill(local, np.random.default_rng(3))
        fill(pgm, np.random.default_rng(3))
        pgm.flush()
        for _ in range(20):
            q = rng.normal(size=DIM)
            want = [n.entry.id for n in local.search(q, 10, **filters)]
            got = [n.entry.id & 0xFFFFFFFF for n in pgm.search(q, 10, **filters)]  # block << 32 | n
            assert got == want
    assert want  # the filters leave entries


def test_hnsw_index_agrees_with_exact_search(pg_uri):
    rng = np.random.default_rng(4)
    with PostgresMemory(pg_config(pg_uri, backend="faiss_hnsw")) as pgm:
        fill(pgm, np.random.default_rng(5), n_per=400)
        pgm.flush()
        exact = PostgresMemory(pg_config(pg_uri))
        try:
            qs = rng.normal(size=(50, DIM))
            same = sum(pgm.search(q, 1, modalities=["lidar"])[0].entry.id
                       == exact.search(q, 1, modalities=["lidar"])[0].entry.id for q in qs)
        finally:
            exact.close()
    assert same >= 45  # recall@1 >= 0.9 on 2,400 entries, filtered to 800


def test_searches_use_each_modality_s_index_and_a_whole_table_index_is_dropped(pg_uri):
    """A search of one or two modalities goes through those modalities' partial HNSW indexes (the plan names them);
    opening with the HNSW backend drops the whole-table index an earlier version built."""
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        PostgresMemory(pg_config(pg_uri)).close()  # the schema, no index
        conn.execute(f"CREATE INDEX {hnsw_index_name(16, 64)} ON cmr_entries USING hnsw (emb vector_ip_ops)")
    with PostgresMemory(pg_config(pg_uri, backend="faiss_hnsw")) as mem:
        fill(mem, np.random.default_rng(6), n_per=300)
        mem.flush()
        plans = []
        real = mem._reader.execute

        def explain(sql, params=None, **kw):
            if sql.lstrip().startswith("SELECT") and "emb <#>" in sql:
                plans.append("\n".join(r[0] for r in real("EXPLAIN " + sql, params, **kw).fetchall()))
            return real(sql, params, **kw)

        mem._reader.execute = explain
        q = np.random.default_rng(7).normal(size=DIM)
        assert len(mem.search(q, 5, modalities=["lidar"], exclude_session="drive_a")) == 5
        assert len(mem.search(q, 5, modalities=["camera", "radar"])) == 5
        mem._reader.execute = real
        assert mem.stats().exact_fallbacks == 0
    assert hnsw_index_name(16, 64, Modality.LIDAR) in plans[0]
    assert all(hnsw_index_name(16, 64, m) not in plans[0] for m in (Modality.CAMERA, Modality.RADAR))
    assert hnsw_index_name(16, 64, Modality.CAMERA) in plans[1] and hnsw_index_name(16, 64, Modality.RADAR) in plans[1]
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (hnsw_index_name(16, 64),)).fetchone()[0] is None


def test_entries_still_queued_are_found(pg_uri):
    with PostgresMemory(pg_config(pg_uri)) as mem:
        v = np.ones(DIM, np.float32)
        with mem._queue_lock:  # hold the writer back: the entry stays queued
            e = mem.add(v, "camera", "/c", "c", S)
            [n] = mem.search(v, 1)
        assert n.entry.id == e.id and n.score == pytest.approx(1.0)


# --- fleet: writers and robots ------------------------------------------------------------------------------------


def test_two_writers_at_once_and_robot_filters(pg_uri):
    mems = [PostgresMemory(pg_config(pg_uri, robot=r)) for r in ("car1", "car2")]
    ids: dict[str, list[int]] = {}

    def write(mem):
        rng = np.random.default_rng(len(mem.robot))
        ids[mem.robot] = [mem.add(rng.normal(size=DIM), "lidar", "/l", "l", i * S, session=mem.robot).id
                          for i in range(400)]

    threads = [threading.Thread(target=write, args=(m,)) for m in mems]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for m in mems:
        assert m.flush() == 0
    all_ids = ids["car1"] + ids["car2"]
    assert len(set(all_ids)) == 800
    car1 = mems[0]
    q = np.random.default_rng(9).normal(size=DIM)
    assert {n.entry.robot for n in car1.search(q, 50, exclude_robot="car1")} == {"car2"}
    assert {n.entry.robot for n in car1.search(q, 50, robot="car1")} == {"car1"}
    assert {n.entry.robot for n in car1.search(q, 50)} == {"car1", "car2"}
    assert sorted(car1.ids().tolist()) == sorted(all_ids)
    for m in mems:
        m.close()


def test_open_memory_picks_the_store_and_the_robot_id(pg_uri, tmp_path):
    cfg = pg_config(pg_uri, robot="")
    with open_memory(cfg, namespace="/car3") as mem:
        assert isinstance(mem, PostgresMemory) and mem.robot == "car3"
    local = MemoryConfig.from_dict({"dim": DIM})
    with open_memory(local, tmp_path / "m", namespace="/car4") as mem:
        assert isinstance(mem, SceneMemory) and mem.robot == "car4"
        mem.add(np.ones(DIM), "camera", "/c", "c", S)
        assert mem.search(np.ones(DIM), 1, exclude_robot="car4") == []
        assert [n.entry.robot for n in mem.search(np.ones(DIM), 1, robot="car4")] == ["car4"]


# --- faults -------------------------------------------------------------------------------------------------------


def test_server_killed_and_restarted_mid_run():
    with server_dir() as path:
        _killed_and_restarted(path)


def _killed_and_restarted(tmp_path):
    server = PgServer(tmp_path / "data").start()
    try:
        mem = PostgresMemory(pg_config(server.uri))
        rng = np.random.default_rng(6)
        before = [mem.add(rng.normal(size=DIM), "camera", "/c", "c", i * S) for i in range(50)]
        assert mem.flush() == 0
        server.kill9()
        during = [mem.add(rng.normal(size=DIM), "camera", "/c", "c", (100 + i) * S) for i in range(50)]
        assert all(e is not None for e in during)  # writes are queued, never raised
        assert mem.search(rng.normal(size=DIM), 5) == []  # fails soft...
        time.sleep(0.3)
        assert mem.search(rng.normal(size=DIM), 5) == []
        st = mem.stats()
        assert st.search_failures >= 2 and not st.connected and st.write_queue == 50  # ...counted
        server = PgServer(tmp_path / "data").start()
        assert mem.flush(timeout_s=30) == 0  # the buffered writes were retried
        deadline = time.monotonic() + 10
        while not mem.search(rng.normal(size=DIM), 5) and time.monotonic() < deadline:
            time.sleep(0.1)  # the search connection comes back by itself
        assert len(mem.search(rng.normal(size=DIM), 5)) == 5
        st = mem.stats()
        assert st.connected and st.write_queue == 0
        assert mem.pg_stats().reconnects >= 2 and mem.pg_stats().write_failures >= 1
        assert sorted(mem.ids().tolist()) == sorted(e.id for e in before + during)
        assert mem.close() == 0
    finally:
        server.stop()


def test_a_full_queue_drops_the_oldest_and_counts():
    with server_dir() as path:
        _full_queue(path)


def _full_queue(tmp_path):
    server = PgServer(tmp_path / "data").start()
    try:
        mem = PostgresMemory(pg_config(server.uri, write_queue=10))
        server.kill9()
        rng = np.random.default_rng(7)
        added = [mem.add(rng.normal(size=DIM), "lidar", "/l", "l", i * S).id for i in range(25)]
        assert mem.stats().dropped_writes == 15 and mem.stats().write_queue == 10
        server = PgServer(tmp_path / "data").start()
        assert mem.flush(timeout_s=30) == 0
        assert mem.ids().tolist() == added[-10:]
        mem.close()
    finally:
        server.stop()


# --- who may read and write ---------------------------------------------------------------------------------------


def _robot_login(pg_uri: str, server, role: str, password: str, tmp_path) -> MemoryConfig:
    """A LOGIN role in the cmr_robot group and its libpq password file; the TCP URI has no password."""
    from cmr_fusion_ros.core.memory.postgres import grant_robot

    with psycopg.connect(pg_uri, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        grant_robot(conn, role)
    dbname = pg_uri.split("?")[0].rsplit("/", 1)[1]
    passfile = tmp_path / f"{role}.pgpass"
    passfile.write_text(f"127.0.0.1:{server.port}:{dbname}:{role}:{password}\n")
    passfile.chmod(0o600)
    return pg_config(with_db(server.tcp_uri, dbname, user=role), robot=role, passfile=str(passfile))


def test_robot_roles_insert_and_search_but_cannot_rewrite_others(pg_uri, pg_server, tmp_path):
    with PostgresMemory(pg_config(pg_uri)):  # the operator creates the schema
        pass
    cfg1 = _robot_login(pg_uri, pg_server, "robot_a", "pw-a", tmp_path)
    cfg2 = _robot_login(pg_uri, pg_server, "robot_b", "pw-b", tmp_path)
    rng = np.random.default_rng(8)
    with PostgresMemory(cfg1) as a, PostgresMemory(cfg2) as b:
        a.add_batch(rng.normal(size=(20, DIM)), "camera", "/c", "c", np.arange(20) * S)
        b.add_batch(rng.normal(size=(20, DIM)), "lidar", "/l", "l", np.arange(20) * S)
        assert a.flush() == 0 and b.flush() == 0
        assert {n.entry.robot for n in a.search(rng.normal(size=DIM), 40)} == {"robot_a", "robot_b"}
        assert a.clear() == 20  # its own rows only
        assert len(b.search(rng.normal(size=DIM), 40)) == 20
    uri_a = with_db(pg_server.tcp_uri, pg_uri.split("?")[0].rsplit("/", 1)[1], user="robot_a")
    with psycopg.connect(uri_a, passfile=cfg1.postgres.passfile, autocommit=True) as conn:
        assert conn.execute("DELETE FROM cmr_entries WHERE robot = 'robot_b'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE cmr_entries SET robot = 'robot_a'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP TABLE cmr_entries")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a row claiming another login
            conn.execute("INSERT INTO cmr_entries (id, robot, session, modality, topic, frame_id, stamp_ns, emb, "
                         "written_by) VALUES (1, 'robot_b', '', 0, '', '', 0, %s, 'robot_b')",
                         (str([1.0] * DIM),))
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT count(*) FROM cmr_entries WHERE robot = 'robot_b'").fetchone()[0] == 20


def test_a_password_login_without_its_secret_is_refused_clearly(pg_uri, pg_server, tmp_path):
    cfg = _robot_login(pg_uri, pg_server, "robot_c", "pw-c", tmp_path)
    (tmp_path / "robot_c.pgpass").write_text("")
    with pytest.raises(ConfigError, match=r"memory\.postgres\.uri") as err:
        PostgresMemory(cfg)
    assert "pw-c" not in str(err.value)


# --- moving memories ----------------------------------------------------------------------------------------------


def test_import_then_export_keeps_ids_and_metadata(pg_uri, tmp_path):
    from cmr_fusion_ros.core.memory.transfer import export_to_folder, import_from_folder

    local_cfg = MemoryConfig.from_dict({"dim": DIM, "admission": {"enabled": False}})
    with SceneMemory.open(tmp_path / "drive", local_cfg) as local:
        fill(local, np.random.default_rng(10), n_per=30)
        want = list(local.entries())
    cfg = pg_config(pg_uri, robot="")
    n, block = import_from_folder(tmp_path / "drive", cfg, "car5")
    assert n == len(want) == 180
    with PostgresMemory(cfg) as pgm:
        got = list(pgm.iter_entries())
    assert [e.id for e in got] == [block << 32 | e.id for e in want]  # the low 32 bits are the local ids
    assert [(e.modality, e.topic, e.frame_id, e.stamp_ns, e.pose, e.session) for e in got] == \
           [(e.modality, e.topic, e.frame_id, e.stamp_ns, e.pose, e.session) for e in want]
    assert {e.robot for e in got} == {"car5"}
    np.testing.assert_allclose(np.stack([e.vector for e in got]), np.stack([e.vector for e in want]), atol=1e-6)
    assert export_to_folder(cfg, tmp_path / "back", robot="car5") == 180
    with SceneMemory.open(tmp_path / "back", local_cfg, read_only=True) as back:
        assert [e.id for e in back.entries()] == [e.id for e in got]
        assert [(e.stamp_ns, e.session, e.pose) for e in back.entries()] == [(e.stamp_ns, e.session, e.pose)
                                                                              for e in want]
    # an export of entries from the fleet store goes back in under the same ids, stored once
    import_from_folder(tmp_path / "back", cfg, "car5")
    with PostgresMemory(cfg) as pgm:
        assert pgm.ids().tolist() == [e.id for e in got]


def test_export_refuses_mixed_robots_without_a_choice(pg_uri, tmp_path):
    from cmr_fusion_ros.core.errors import MemoryStoreError
    from cmr_fusion_ros.core.memory.transfer import export_to_folder

    for robot in ("car1", "car2"):
        with PostgresMemory(pg_config(pg_uri, robot=robot)) as m:
            m.add(np.ones(DIM), "camera", "/c", "c", S)
    with pytest.raises(MemoryStoreError, match="--robot"):
        export_to_folder(pg_config(pg_uri), tmp_path / "out")
    assert export_to_folder(pg_config(pg_uri), tmp_path / "out2", robot="car2") == 1


def test_memory_cli_import_export_and_grant(pg_uri, tmp_path):
    from cmr_fusion_ros.cli import main

    local_cfg = MemoryConfig.from_dict({"dim": DIM, "admission": {"enabled": False}})
    with SceneMemory.open(tmp_path / "drive", local_cfg) as local:
        fill(local, np.random.default_rng(11), n_per=5)
    assert main(["memory", "import", "--uri", pg_uri, "--from", str(tmp_path / "drive"), "--robot", "car9"]) == 0
    assert main(["memory", "export", "--uri", pg_uri, "--to", str(tmp_path / "out"), "--dim", str(DIM)]) == 0
    with SceneMemory.open(tmp_path / "out", local_cfg, read_only=True) as out:
        assert len(out) == 30
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("CREATE ROLE robot_cli LOGIN")
    assert main(["memory", "grant", "--uri", pg_uri, "--role", "robot_cli", "--dim", str(DIM)]) == 0
    with psycopg.connect(pg_uri) as conn:
        assert conn.execute("SELECT pg_has_role('robot_cli', 'cmr_robot', 'member')").fetchone()[0]


def test_benchmark_rows_on_a_small_table(pg_uri):
    from cmr_fusion_ros.eval.bench_pg import format_pg_table, run_pg_benchmark

    [row] = run_pg_benchmark([600], dim=DIM, n_queries=30, k=5, insert_rate=200, insert_seconds=0.5, uri=pg_uri)
    assert row.size == 600 and row.index_build_s > 0 and row.load_per_s > 0 and row.insert_per_s > 0
    assert row.recall_at_1 >= 0.9 and row.query_ms["n"] == 30 and row.loaded_query_ms["n"] >= 1
    assert "600" in format_pg_table([row])



def test_bench_target_line_says_when_the_writer_offered_too_little(pg_uri, capsys):
    # a writer offering 1000/s or less cannot show the 1000/s target: the line says so instead of a bare NOT MET
    from cmr_fusion_ros.cli import main

    assert main(["bench", "memory", "--backends", "postgres", "--sizes", "600", "--dim", str(DIM), "--queries", "30",
                 "--k", "5", "--pg-insert-rate", "200", "--pg-insert-seconds", "0.5", "--pg-uri", pg_uri]) == 0
    out = capsys.readouterr().out
    assert "NOT MET at this size (the writer offered 200/s: offer more than 1000/s to show the target)" in out


_KILLED_WRITER = """
import os, signal, sys
import numpy as np
from cmr_fusion_ros.core.memory import MemoryConfig
from cmr_fusion_ros.core.memory.postgres import PostgresMemory
cfg = MemoryConfig.from_dict({"dim": %d, "store": "postgres", "robot_id": "car1", "admission": {"enabled": False},
                              "postgres": {"uri": sys.argv[1]}})
mem = PostgresMemory(cfg)
rng = np.random.default_rng(0)
ids = [mem.add(rng.normal(size=%d), "camera", "/c", "c", i).id for i in range(100)]
assert mem.flush() == 0
print(" ".join(map(str, ids)), flush=True)
for i in range(500):
    mem.add(rng.normal(size=%d), "camera", "/c", "c", 1000 + i)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_of_a_writer_keeps_every_acknowledged_entry(pg_uri):
    import os
    import subprocess
    import sys

    from tests.pg_server import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER % (DIM, DIM, DIM), pg_uri], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == -9, proc.stderr
    acked = [int(x) for x in proc.stdout.split()]
    with psycopg.connect(pg_uri) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM cmr_entries")}
    assert len(acked) == 100 and set(acked) <= stored and len(stored) <= 600



@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGINT,SIGINT,SIGTERM,SIGINT"])
def test_memory_server_prints_its_uri_and_stops_cleanly(sig):
    import signal

    import psutil

    with server_dir() as path:
        server = PgServer(path / "data").start()
        assert server.uri.startswith("postgresql://") and f"host={path / 'data'}" in server.uri  # the Unix socket
        pid = server.postmaster_pid
        with psycopg.connect(server.uri) as conn:
            assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'").fetchone()
            listen = conn.execute("SHOW listen_addresses").fetchone()[0]
        assert listen == ""  # no TCP at all without --port
        for name in sig.split(","):  # several at once: Ctrl-C through a wrapper arrives twice
            server.proc.send_signal(getattr(signal, name))
        assert server.proc.wait(timeout=60) == 0
        assert "stopped" in server.proc.stdout.read()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_memory_server_shared_buffers_kept_in_the_data_folder():
    with server_dir() as path:
        server = PgServer(path / "data", extra=("--shared-buffers", "64MB")).start()
        try:
            with psycopg.connect(server.uri) as conn:
                assert conn.execute("SHOW shared_buffers").fetchone()[0] == "64MB"
                assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'").fetchone()
        finally:
            server.stop()
        server = PgServer(path / "data").start()  # without the option: the folder's setting stays
        try:
            with psycopg.connect(server.uri) as conn:
                assert conn.execute("SHOW shared_buffers").fetchone()[0] == "64MB"
        finally:
            server.stop()


@pytest.mark.parametrize("bad", ["4G", "0MB", "-1GB", "lots"])
def test_memory_server_refuses_a_bad_shared_buffers(tmp_path, capsys, bad):
    from cmr_fusion_ros.cli import main

    assert main(["memory-server", "--data", str(tmp_path / "data"), f"--shared-buffers={bad}"]) == 2
    err = capsys.readouterr().err
    assert "--shared-buffers" in err and "kB, MB, GB or TB" in err and not (tmp_path / "data").exists()


def test_memory_server_port_is_loopback_only_with_passwords(pg_server):
    with psycopg.connect(pg_server.uri) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
    assert ("local", "trust") in rules and all(auth == "scram-sha-256" for kind, auth in rules if kind == "host")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_server.tcp_uri, connect_timeout=5, passfile="/dev/null")


def test_hnsw_parameters_pgvector_refuses_are_named_before_connecting(capsys):
    # pgvector builds HNSW only with ef_construction >= 2 m (FAISS has no such rule); caught before any connection
    from cmr_fusion_ros.cli import main

    cfg = MemoryConfig.from_dict({"dim": 8, "store": "postgres", "postgres": {"uri": "postgresql:///nowhere"},
                                  "index": {"backend": "faiss_hnsw", "hnsw_m": 48, "hnsw_ef_construction": 80}})
    with pytest.raises(ConfigError, match=r"memory\.index\.hnsw_ef_construction.*2 x memory\.index\.hnsw_m \(96\)"):
        PostgresMemory(cfg)
    assert main(["bench", "memory", "--backends", "postgres", "--pg-m", "16", "--pg-ef-construction", "16",
                 "--sizes", "1000"]) == 2
    assert "--pg-ef-construction" in capsys.readouterr().err


def test_tls_verify_full_works_and_a_wrong_ca_or_host_is_refused(pg_uri):
    # the embedded server has no SSL: a TLS-terminating proxy (tests/tls_proxy.py) in front of its Unix socket plays
    # the server's side, so the client side (libpq through psycopg, the URI as given) runs as against a TLS server
    from pathlib import Path
    from urllib.parse import parse_qs, urlsplit

    from tests.tls_proxy import TLS_DIR, TlsProxy

    parts = urlsplit(pg_uri)
    sock = next(p for p in Path(parse_qs(parts.query)["host"][0]).glob(".s.PGSQL.*") if p.suffix != ".lock")
    with TlsProxy(sock) as proxy:
        uri = (f"postgresql://postgres@localhost:{proxy.port}{parts.path}?sslmode=verify-full"
               f"&sslrootcert={TLS_DIR / 'ca.pem'}")
        mem = PostgresMemory(pg_config(uri))
        vec = np.eye(DIM, dtype=np.float32)[3]
        entry = mem.add(vec, Modality.LIDAR, "/lidar", "lidar_link", 5 * S)
        assert mem.flush() == 0 and mem.pg_stats().written == 1
        assert [n.entry.id for n in mem.search(vec, 1)] == [entry.id]
        mem.close()
        with psycopg.connect(uri) as conn:
            assert conn.pgconn.ssl_in_use and conn.info.parameter_status("server_version")
        assert proxy.tls_sessions >= 3  # the memory's reader and writer, this check
        for bad, why in ((uri.replace("ca.pem", "other_ca.pem"), "another CA"),
                         (uri.replace("@localhost:", "@127.0.0.1:"), "a host name not in the certificate")):
            with pytest.raises(ConfigError, match=r"memory\.postgres\.uri.*certificate"):  # one clear error
                PostgresMemory(pg_config(bad))
