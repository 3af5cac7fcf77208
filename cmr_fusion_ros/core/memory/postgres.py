"""The fleet scene memory: the same interface as :class:`SceneMemory`, stored in PostgreSQL with pgvector.

Many robots write into one table (``cmr_entries``; each row keeps what the local store keeps plus the robot id) and
search all of it. The design follows what was measured on pgvector (see the README): the HNSW index is kept current
by the database, so inserts go through a bounded local queue drained in batches by one background thread (binary
COPY into a staging table, then ``INSERT ... ON CONFLICT DO NOTHING``, so a batch retried after a lost
acknowledgement is stored once). Entries still in the queue are searched exactly here and merged with the database's
answer, so a search never misses what this node just added.

Faults never kill the caller: while the database is away writes stay queued (the oldest dropped and counted when the
queue is full) and are retried, searches return nothing and are counted, and both connections come back by
themselves. What the database acknowledged survives a kill -9 of the node (it is committed).

Ids: each writer takes a block number from the sequence ``cmr_writer_seq`` when it opens; its ids are
``block << 32 | n`` (n = 1, 2, ...), unique across the fleet, increasing for one writer, never 0. Imported entries
keep their ids (block 0 holds a local memory's ids).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from cmr_fusion_ros.core.errors import ConfigError, MemoryStoreError
from cmr_fusion_ros.core.memory.config import MemoryConfig
from cmr_fusion_ros.core.memory.entry import (
    MemoryEntry,
    Neighbor,
    Rejection,
    duplicate_rejection,
    normalise_vector,
    normalise_vectors,
)
from cmr_fusion_ros.core.types import Modality, Pose

__all__ = ["SCHEMA_VERSION", "PostgresMemory", "PostgresStats", "redact_uri"]

SCHEMA_VERSION = 1
MODALITIES: tuple[Modality, ...] = tuple(Modality)
_CODE = {m: i for i, m in enumerate(MODALITIES)}
_BLOCK_BITS = 32
_COLUMNS = "id, robot, session, modality, topic, frame_id, stamp_ns, pose, emb"
_COPY_TYPES = ["int8", "text", "text", "int2", "text", "text", "int8", "float8[]", "vector"]
_LOCK_KEY = 0x636D72  # advisory lock around migrations ('cmr')
ROBOT_ROLE = "cmr_robot"  # group role: may insert and search, may delete only the rows its own login wrote


def _migrations(dim: int) -> dict[int, list[str]]:
    """SQL that brings the schema from version v-1 to v (applied in order, in one transaction each)."""
    return {
        1: [
            "CREATE TABLE cmr_schema (version int NOT NULL, dim int NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())",
            "CREATE SEQUENCE cmr_writer_seq START 1",
            f"""CREATE TABLE cmr_entries (
                id bigint PRIMARY KEY,
                robot text NOT NULL,
                session text NOT NULL,
                modality smallint NOT NULL,
                topic text NOT NULL,
                frame_id text NOT NULL,
                stamp_ns bigint NOT NULL,
                pose float8[] CHECK (pose IS NULL OR cardinality(pose) = 7),
                emb vector({dim}) NOT NULL,
                written_by name NOT NULL DEFAULT current_user,
                written_at timestamptz NOT NULL DEFAULT now())""",
            "CREATE INDEX cmr_entries_robot_session ON cmr_entries (robot, session)",
            "CREATE INDEX cmr_entries_stamp ON cmr_entries (stamp_ns)",
            # who may do what: every role reads; a row is inserted (and deleted) only as the login that wrote it
            "ALTER TABLE cmr_entries ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY cmr_read ON cmr_entries FOR SELECT USING (true)",
            "CREATE POLICY cmr_insert_own ON cmr_entries FOR INSERT WITH CHECK (written_by = current_user)",
            "CREATE POLICY cmr_delete_own ON cmr_entries FOR DELETE USING (written_by = current_user)",
        ],
    }


def redact_uri(uri: str) -> str:
    """The URI without any password (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        p = urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if p.password:
        netloc = p.netloc.replace(f":{p.password}@", ":***@")
        p = p._replace(netloc=netloc)
    return urlunsplit(p)


def _psycopg():
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as err:
        raise ConfigError("memory.store", "postgres",
                          f"local, or install the postgres extra (pip install 'cmr_fusion_ros[postgres]'): {err}") \
            from None
    return psycopg, register_vector


def connect(config: MemoryConfig, *, autocommit: bool = True, register: bool = True):
    """One connection to ``memory.postgres.uri`` (statement timeout, passfile and connect timeout applied).

    Raises ConfigError naming ``memory.postgres.uri`` when the server cannot be reached or has no pgvector."""
    psycopg, register_vector = _psycopg()
    pg = config.postgres
    kwargs: dict[str, Any] = {"connect_timeout": max(1, math.ceil(pg.connect_timeout_s)), "autocommit": autocommit}
    if pg.passfile:
        kwargs["passfile"] = pg.passfile
    if pg.statement_timeout_ms:
        kwargs["options"] = f"-c statement_timeout={pg.statement_timeout_ms}"
    try:
        conn = psycopg.connect(pg.uri, **kwargs)
    except psycopg.Error as err:
        raise ConfigError("memory.postgres.uri", redact_uri(pg.uri),
                          f"a reachable PostgreSQL server ({_first_line(err)})") from None
    if register:
        connect_vector(conn, config)
    return conn


def connect_vector(conn, config: MemoryConfig) -> None:
    """Teach the connection the ``vector`` type (numpy arrays in and out); ConfigError without pgvector."""
    psycopg, register_vector = _psycopg()
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        conn.close()
        raise ConfigError("memory.postgres.uri", redact_uri(config.postgres.uri),
                          "a database with the pgvector extension (CREATE EXTENSION vector; "
                          "`cmr-fusion memory-server` has it)") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def ensure_schema(conn, dim: int, where: str = "memory.postgres.uri") -> int:
    """Create or migrate the schema (under an advisory lock, so writers starting together agree). Returns the
    version. Raises ConfigError for a server without pgvector or a table of another embedding size."""
    import psycopg

    migrations = _migrations(dim)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        have_vector = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if not have_vector:
            available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            if not available:
                raise ConfigError(where, "(server)", "a PostgreSQL server with the pgvector extension installed "
                                                     "(`cmr-fusion memory-server` has it)")
            try:
                with conn.transaction():
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as err:
                raise ConfigError(where, "(server)", f"a database where pgvector is enabled: {_first_line(err)}") \
                    from None
        exists = conn.execute("SELECT to_regclass('cmr_schema') IS NOT NULL").fetchone()[0]
        version, stored_dim = 0, dim
        if exists:
            row = conn.execute("SELECT max(version), max(dim) FROM cmr_schema").fetchone()
            version, stored_dim = int(row[0] or 0), int(row[1] or dim)
        if version > SCHEMA_VERSION:
            raise MemoryStoreError("postgres", f"schema version {version} is newer than this code's "
                                               f"{SCHEMA_VERSION}: update cmr_fusion_ros")
        if stored_dim != dim:
            raise ConfigError("memory.dim", dim, f"{stored_dim}, the embedding size of the database's entries")
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for sql in migrations[v]:
                conn.execute(sql)
            conn.execute("INSERT INTO cmr_schema (version, dim) VALUES (%s, %s)", (v, dim))
            if v == 1:
                _create_robot_role(conn)
    return SCHEMA_VERSION


def _create_robot_role(conn) -> None:
    """The group role robots log in through (needs CREATEROLE; skipped, with the grants, where the migrating user
    may not create roles: the operator then grants by hand as the README shows)."""
    import psycopg

    try:
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROBOT_ROLE,)).fetchone():
                conn.execute(f"CREATE ROLE {ROBOT_ROLE} NOLOGIN")
            conn.execute(f"GRANT SELECT, INSERT, DELETE ON cmr_entries TO {ROBOT_ROLE}")
            conn.execute(f"GRANT SELECT ON cmr_schema TO {ROBOT_ROLE}")
            conn.execute(f"GRANT USAGE, SELECT ON SEQUENCE cmr_writer_seq TO {ROBOT_ROLE}")
    except psycopg.errors.InsufficientPrivilege:
        pass


def hnsw_index_name(m: int, ef_construction: int, modality: Modality | None = None) -> str:
    """The HNSW index of one modality's rows (``modality``), or the whole-table index of schema 1's code (None)."""
    base = f"cmr_entries_emb_hnsw_m{m}_ef{ef_construction}"
    return base if modality is None else f"{base}_{modality.value}"


def check_hnsw_params(m: int, ef_construction: int, m_key: str = "memory.index.hnsw_m",
                      ef_key: str = "memory.index.hnsw_ef_construction") -> None:
    """pgvector builds an HNSW index only with ``ef_construction >= 2 * m`` (FAISS has no such rule): ConfigError
    naming ``ef_key`` otherwise."""
    if ef_construction < 2 * m:
        raise ConfigError(ef_key, ef_construction, f">= 2 x {m_key} ({2 * m}), pgvector's rule for HNSW indexes")


def ensure_hnsw_index(conn, m: int, ef_construction: int) -> bool:
    """Build the HNSW indexes (inner product on unit vectors = cosine) when missing: one partial index per modality
    (``WHERE modality = c``). A route searches one or two modalities, and an index over every row answers such a
    filtered query only by walking past the other modalities' rows (pgvector's iterative scan): at 1,000,000 rows, a
    third of them one modality's, recall@1 fell to 0.80 at ef_search 64 (README). A whole-table index of earlier
    code is dropped (every insert would keep it current for nothing). True when an index was built now."""
    built = False
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        old = hnsw_index_name(m, ef_construction)
        if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (old,)).fetchone()[0]:
            conn.execute(f"DROP INDEX {old}")
        for modality in MODALITIES:
            name = hnsw_index_name(m, ef_construction, modality)
            if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]:
                continue
            conn.execute(f"CREATE INDEX {name} ON cmr_entries USING hnsw (emb vector_ip_ops) "
                         f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) "
                         f"WHERE modality = {_CODE[modality]}")
            built = True
    return built


def grant_robot(conn, role: str) -> None:
    """Let the login role ``role`` write and search the memory (member of ``cmr_robot``)."""
    from psycopg import sql

    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(ROBOT_ROLE), sql.Identifier(role)))


@dataclass(frozen=True, slots=True)
class PostgresStats:
    """What the database side adds to :class:`MemoryStats` (``SceneMemory.stats`` fields keep their meaning)."""

    connected: bool
    write_queue: int
    written: int
    dropped_writes: int
    write_failures: int
    search_failures: int
    reconnects: int
    last_error: str


class PostgresMemory:
    """A scene memory in PostgreSQL + pgvector; the interface of :class:`SceneMemory` (add, add_batch, search,
    search_many, search_ids, get, ids, clear, stats, flush, snapshot, close).

    Opening connects, creates or migrates the schema, builds the HNSW indexes (one per modality) when
    ``memory.index.backend`` is ``faiss_hnsw`` (its ``hnsw_m`` / ``hnsw_ef_construction`` / ``hnsw_ef_search``;
    ``exact`` and ``faiss_flat`` scan exactly) and starts the writer thread. A bad URI or a server without pgvector
    raises ConfigError naming ``memory.postgres.uri``.
    """

    def __init__(self, config: MemoryConfig) -> None:
        if config.store != "postgres" or not config.postgres.uri:
            raise ConfigError("memory.store", config.store, "postgres, with memory.postgres.uri set")
        self._config = config
        self._dim = config.dim
        self._robot = config.robot_id
        self._approximate = config.index.backend == "faiss_hnsw"
        if self._approximate:
            check_hnsw_params(config.index.hnsw_m, config.index.hnsw_ef_construction)
        self._psycopg, _ = _psycopg()
        conn = connect(config, register=False)
        try:
            ensure_schema(conn, self._dim)
            connect_vector(conn, config)
            if self._approximate:
                ensure_hnsw_index(conn, config.index.hnsw_m, config.index.hnsw_ef_construction)
            self._block = int(conn.execute("SELECT nextval('cmr_writer_seq')").fetchone()[0])
            self._db_count = int(conn.execute("SELECT count(*) FROM cmr_entries").fetchone()[0])
            self._prepare_reader(conn)
        except BaseException:
            conn.close()
            raise
        self._reader = conn
        self._reader_lock = threading.Lock()
        self._writer_conn = None
        self._next_n = 1
        self._queue: collections.deque[MemoryEntry] = collections.deque()
        self._queue_lock = threading.Condition()
        self._last_kept: dict[tuple[int, str], tuple[np.ndarray, Pose | None]] = {}
        self._count = dict.fromkeys(("added", "skipped_duplicate", "written", "dropped_writes", "write_failures",
                                     "search_failures", "reconnects", "exact_fallbacks", "flushes", "cleared"), 0)
        self._last_error = ""
        self._reader_retry_at = 0.0
        self._reader_ok = True
        self._writer_ok = True
        self._closed = False
        self._stop = False
        self.last_rejection: Rejection | None = None
        self._writer = threading.Thread(target=self._write_loop, name="cmr_pg_writer", daemon=True)
        self._writer.start()

    # --- properties ---------------------------------------------------------------------------------------------

    @property
    def config(self) -> MemoryConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def robot(self) -> str:
        return self._robot

    @property
    def directory(self) -> None:
        """No folder: the database keeps the entries (``save_memory`` has nothing to snapshot)."""
        return None

    def __len__(self) -> int:
        """Entries in the database when this memory opened, plus those this memory added since."""
        with self._queue_lock:
            return self._db_count + len(self._queue)

    def __enter__(self) -> "PostgresMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------------------------

    def _new_id(self) -> int:
        n = self._next_n
        if n >= 1 << _BLOCK_BITS:
            raise MemoryStoreError("add", "this writer's id block is used up; reopen the memory")
        self._next_n = n + 1
        return self._block << _BLOCK_BITS | n

    def add(self, vector: object, modality: Modality | str, topic: str, frame_id: str, stamp_ns: int,
            pose: Pose | None = None, session: str = "") -> MemoryEntry | None:
        """Remember one embedding: admission as in the local store, then queued for the writer thread. Returns the
        entry (its id is final) or None when admission refused it (``last_rejection``)."""
        from cmr_fusion_ros.core.memory.scene import SceneMemory

        self._check_open("add")
        vec = normalise_vector(vector, self._dim, "add.vector")
        mod = modality if isinstance(modality, Modality) else Modality.parse(modality)
        stamp_ns = SceneMemory._check_meta(topic, frame_id, stamp_ns, pose, session)
        code = _CODE[mod]
        adm = self._config.admission
        if adm.enabled:
            rej = duplicate_rejection(self._last_kept.get((code, topic)), vec, pose, adm, mod, topic)
            if rej is not None:
                self._count["skipped_duplicate"] += 1
                self.last_rejection = rej
                return None
        entry = MemoryEntry(self._new_id(), mod, topic, frame_id, stamp_ns, pose, session, vec, self._robot)
        self._enqueue([entry])
        self._last_kept[(code, topic)] = (vec, pose)
        self.last_rejection = None
        return entry

    def add_batch(self, vectors: object, modality: Modality | str, topic: str, frame_id: str, stamps_ns: object,
                  poses: object | None = None, session: str = "") -> np.ndarray:
        """Bulk insert, no admission (as ``SceneMemory.add_batch``). Returns the new ids (int64)."""
        self._check_open("add_batch")
        vecs = normalise_vectors(vectors, self._dim, "add_batch.vectors")
        m = vecs.shape[0]
        stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
        if stamps.shape[0] != m:
            raise MemoryStoreError("add_batch", f"{stamps.shape[0]} stamps for {m} vectors")
        pose_list: list[Pose | None] = [None] * m
        if poses is not None:
            arr = np.asarray(poses, dtype=np.float64)
            if arr.shape != (m, 7) or not np.isfinite(arr).all():
                raise MemoryStoreError("add_batch", f"poses must be a finite ({m}, 7) array, got {arr.shape}")
            pose_list = [Pose(*row) for row in arr.tolist()]
        mod = modality if isinstance(modality, Modality) else Modality.parse(modality)
        entries = [MemoryEntry(self._new_id(), mod, topic, frame_id, int(stamps[i]), pose_list[i], session, vecs[i],
                               self._robot) for i in range(m)]
        self._enqueue(entries)
        return np.array([e.id for e in entries], np.int64)

    def insert_entries(self, entries: Sequence[MemoryEntry]) -> None:
        """Queue entries that already have ids and robot ids (``cmr-fusion memory import``)."""
        self._check_open("insert_entries")
        self._enqueue(list(entries))

    def _enqueue(self, entries: list[MemoryEntry]) -> None:
        with self._queue_lock:
            self._queue.extend(entries)
            over = len(self._queue) - self._config.postgres.write_queue
            for _ in range(max(0, over)):
                self._queue.popleft()
            if over > 0:
                self._count["dropped_writes"] += over
            self._count["added"] += len(entries)
            self._queue_lock.notify_all()

    def clear(self, modalities: Iterable[Modality | str] | None = None) -> int:
        """Delete this robot's entries (or those of some modalities) that this login wrote; others' stay."""
        self._check_open("clear")
        self.flush()
        codes = None if modalities is None else sorted({_CODE[m if isinstance(m, Modality) else Modality.parse(m)]
                                                        for m in ([modalities] if isinstance(modalities, str)
                                                                  else modalities)})
        sql = "DELETE FROM cmr_entries WHERE robot = %s"
        params: list[Any] = [self._robot]
        if codes is not None:
            sql += " AND modality = ANY(%s)"
            params.append(codes)
        n = len(self._read(sql + " RETURNING id", params, "clear"))
        self._last_kept = {k: v for k, v in self._last_kept.items() if codes is not None and k[0] not in codes}
        with self._queue_lock:
            self._db_count = max(0, self._db_count - n)
        self._count["cleared"] += n
        return int(n)

    # --- the writer thread --------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        pg = self._config.postgres
        while True:
            with self._queue_lock:
                while not self._queue and not self._stop:
                    self._queue_lock.wait()
                if not self._queue:
                    return
                batch = [self._queue[i] for i in range(min(pg.batch_size, len(self._queue)))]
            try:
                if self._writer_conn is None:
                    self._writer_conn = connect(self._config, autocommit=False)
                    if not self._writer_ok:
                        self._count["reconnects"] += 1
                self._write(self._writer_conn, batch)
                self._writer_ok = True
            except (self._psycopg.Error, ConfigError, OSError) as err:
                self._fail_writer(err)
                if self._stop and time.monotonic() > self._stop_deadline:
                    return
                time.sleep(pg.retry_interval_s)
                continue
            last = batch[-1].id
            with self._queue_lock:
                done = 0
                while self._queue and self._queue[0].id <= last and done < len(batch):
                    self._queue.popleft()
                    done += 1
                self._db_count += len(batch)
                self._count["written"] += len(batch)
                self._queue_lock.notify_all()

    def _fail_writer(self, err: BaseException) -> None:
        self._writer_ok = False
        self._count["write_failures"] += 1
        self._last_error = f"write: {_first_line(err)}"
        if self._writer_conn is not None:
            try:
                self._writer_conn.close()
            except self._psycopg.Error:
                pass
            self._writer_conn = None

    def _write(self, conn, batch: list[MemoryEntry]) -> None:
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS cmr_stage "
                         "(LIKE cmr_entries INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            with conn.cursor() as cur:
                with cur.copy(f"COPY cmr_stage ({_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(_COPY_TYPES)
                    for e in batch:
                        copy.write_row(_row(e))
                cur.execute(f"INSERT INTO cmr_entries ({_COLUMNS}, written_by) "
                            f"SELECT {_COLUMNS}, written_by FROM cmr_stage ON CONFLICT (id) DO NOTHING")

    # --- reading ------------------------------------------------------------------------------------------------

    def _prepare_reader(self, conn) -> None:
        ef = self._config.index.hnsw_ef_search
        try:
            conn.execute(f"SET hnsw.ef_search = {max(1, min(int(ef), 1000))}")
            conn.execute("SET hnsw.iterative_scan = strict_order")
        except self._psycopg.Error as err:
            conn.close()
            raise ConfigError("memory.postgres.uri", redact_uri(self._config.postgres.uri),
                              f"a server with pgvector >= 0.8 (iterative index scans): {_first_line(err)}") from None

    def _reader_conn(self, wait: bool = False):
        """The search connection, reconnected (at most once per retry interval unless ``wait``) after a failure; None
        while away."""
        if self._reader_ok:
            return self._reader
        now = time.monotonic()
        if now < self._reader_retry_at and not wait:
            return None
        self._reader_retry_at = now + self._config.postgres.retry_interval_s
        try:
            conn = connect(self._config)
            self._prepare_reader(conn)
        except (self._psycopg.Error, ConfigError) as err:
            self._last_error = f"search: {_first_line(err)}"
            return None
        try:
            self._reader.close()
        except self._psycopg.Error:
            pass
        self._reader, self._reader_ok = conn, True
        self._count["reconnects"] += 1
        return conn

    def search(self, vector: object, k: int = 10, *, modalities: Iterable[Modality | str] | None = None,
               exclude_newer_than_ns: int | None = None, exclude_session: str | None = None,
               min_score: float | None = None, robot: str | None = None,
               exclude_robot: str | None = None) -> list[Neighbor]:
        """As :meth:`SceneMemory.search`, the filters done in SQL (plus the entries still queued here, searched
        exactly). While the database is away it returns [] and counts ``search_failures`` (fail soft)."""
        from cmr_fusion_ros.core.memory.scene import _check_k, _codes

        _check_k(k)
        self._check_open("search")
        q = normalise_vector(vector, self._dim, "search.vector")
        codes = _codes(modalities)
        if codes is not None and not codes:
            return []
        filters = (codes, exclude_newer_than_ns, exclude_session, robot, exclude_robot)
        found = self._search_db(q, int(k), filters)
        if found is None:
            return []
        found += self._search_queue(q, int(k), filters)
        best: dict[int, tuple[float, MemoryEntry]] = {}
        for score, e in found:
            if e.id not in best or score > best[e.id][0]:
                best[e.id] = (score, e)
        ranked = sorted(best.values(), key=lambda t: (-t[0], t[1].id))[: int(k)]
        if min_score is not None:
            ranked = [t for t in ranked if t[0] >= min_score]
        return [Neighbor(e, s, rank) for rank, (s, e) in enumerate(ranked)]

    def search_many(self, vectors: object, k: int = 10, **filters: Any) -> list[list[Neighbor]]:
        """:meth:`search` for each row of ``vectors``."""
        qs = normalise_vectors(vectors, self._dim, "search_many.vectors")
        return [self.search(q, k, **filters) for q in qs]

    def search_ids(self, vector: object, k: int = 10, **filters: Any) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64, scores float32), best first."""
        found = self.search(vector, k, **filters)
        return (np.array([n.entry.id for n in found], np.int64), np.array([n.score for n in found], np.float32))

    def _where(self, filters, per_modality: bool = False) -> tuple[str, list[Any]]:
        """The filters in SQL. ``per_modality``: without the modality clause (each modality is its own query)."""
        codes, newer, session, robot, exclude_robot = filters
        clauses, params = [], []
        if codes is not None and len(codes) < len(MODALITIES) and not per_modality:
            clauses.append("modality = ANY(%s)")
            params.append(codes)
        if newer is not None:
            clauses.append("stamp_ns <= %s")
            params.append(int(newer))
        if session is not None:
            clauses.append("session <> %s")
            params.append(session)
        if robot is not None:
            clauses.append("robot = %s")
            params.append(robot)
        if exclude_robot is not None:
            clauses.append("robot <> %s")
            params.append(exclude_robot)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _search_db(self, q: np.ndarray, k: int, filters) -> list[tuple[float, MemoryEntry]] | None:
        with self._reader_lock:
            conn = self._reader_conn()
            if conn is None:
                self._count["search_failures"] += 1
                return None
            try:
                if self._approximate:
                    codes = filters[0] if filters[0] is not None else list(range(len(MODALITIES)))
                    where, params = self._where(filters, per_modality=True)
                    rows = self._query_per_modality(conn, q, k, sorted(codes), where, params)
                if not self._approximate or len(rows) < k:  # the index ran dry under the filters: answer exactly
                    if self._approximate:
                        self._count["exact_fallbacks"] += 1
                    where, params = self._where(filters)
                    rows = self._query(conn, q, k, where, params)
            except self._psycopg.Error as err:
                self._count["search_failures"] += 1
                self._last_error = f"search: {_first_line(err)}"
                if conn.broken or isinstance(err, self._psycopg.OperationalError):
                    self._reader_ok = False
                    self._reader_retry_at = 0.0
                return None
        return [(-float(r[-1]), _entry(r)) for r in rows]

    @staticmethod
    def _query(conn, q: np.ndarray, k: int, where: str, params: list[Any]) -> list[tuple]:
        """Exact: `+ 0` hides the distance from the planner, so the search scans instead of using an HNSW index."""
        sql = f"SELECT {_COLUMNS}, emb <#> %s AS d FROM cmr_entries{where} ORDER BY (emb <#> %s) + 0 LIMIT %s"
        return conn.execute(sql, [q, *params, q, k], binary=True).fetchall()  # vectors as float32, not text

    @staticmethod
    def _query_per_modality(conn, q: np.ndarray, k: int, codes: list[int], where: str,
                            params: list[Any]) -> list[tuple]:
        """Through each modality's partial HNSW index: one sub-query per modality (its code a literal in the SQL, so
        the planner can match the index's ``WHERE modality = c``), the best ``k`` of their union."""
        parts, args = [], []
        for c in codes:
            cond = f"{where} AND modality = {int(c)}" if where else f" WHERE modality = {int(c)}"
            parts.append(f"(SELECT {_COLUMNS}, emb <#> %s AS d FROM cmr_entries{cond} ORDER BY emb <#> %s LIMIT %s)")
            args += [q, *params, q, k]
        if len(parts) == 1:
            return conn.execute(parts[0][1:-1], args, binary=True).fetchall()
        sql = "SELECT * FROM (" + " UNION ALL ".join(parts) + ") AS u ORDER BY d LIMIT %s"
        return conn.execute(sql, [*args, k], binary=True).fetchall()

    def _search_queue(self, q: np.ndarray, k: int, filters) -> list[tuple[float, MemoryEntry]]:
        codes, newer, session, robot, exclude_robot = filters
        with self._queue_lock:
            pending = list(self._queue)
        keep = [e for e in pending
                if (codes is None or _CODE[e.modality] in codes) and (newer is None or e.stamp_ns <= newer)
                and (session is None or e.session != session) and (robot is None or e.robot == robot)
                and (exclude_robot is None or e.robot != exclude_robot)]
        if not keep:
            return []
        scores = np.stack([e.vector for e in keep]) @ q
        top = np.argsort(-scores, kind="stable")[:k]
        return [(float(scores[i]), keep[i]) for i in top]

    def get(self, entry_id: int) -> MemoryEntry | None:
        """The entry with this id (queued here or in the database), or None."""
        with self._queue_lock:
            for e in self._queue:
                if e.id == entry_id:
                    return e
        rows = self._read(f"SELECT {_COLUMNS} FROM cmr_entries WHERE id = %s", (int(entry_id),), "get")
        return _entry(rows[0]) if rows else None

    def _read(self, sql: str, params: Sequence[Any], op: str) -> list[tuple]:
        """Rows of one query on the search connection (reconnecting first when needed); MemoryStoreError when the
        database cannot answer."""
        with self._reader_lock:
            for attempt in (1, 2):  # a connection found broken is replaced once
                conn = self._reader_conn(wait=True)
                if conn is None:
                    raise MemoryStoreError(op, f"the database is unreachable ({self._last_error})")
                try:
                    return conn.execute(sql, params).fetchall()
                except self._psycopg.Error as err:
                    lost = conn.broken or isinstance(err, self._psycopg.OperationalError)
                    if lost:
                        self._reader_ok = False
                    if not lost or attempt == 2:
                        raise MemoryStoreError(op, _first_line(err)) from None
        raise AssertionError("unreachable")

    def ids(self) -> np.ndarray:
        """Ids of all entries in the database (after writing the queue), ascending."""
        self.flush()
        rows = self._read("SELECT id FROM cmr_entries ORDER BY id", (), "ids")
        return np.array([r[0] for r in rows], np.int64)

    def iter_entries(self, batch: int = 5000) -> Iterator[MemoryEntry]:
        """Every entry of the database in id order (``cmr-fusion memory export``)."""
        self.flush()
        last = -(1 << 62)
        while True:
            rows = self._read(f"SELECT {_COLUMNS} FROM cmr_entries WHERE id > %s ORDER BY id LIMIT %s",
                              (last, batch), "export")
            if not rows:
                return
            for r in rows:
                yield _entry(r)
            last = rows[-1][0]

    def grant(self, role: str) -> None:
        """Let the LOGIN role ``role`` insert and search (member of ``cmr_robot``); needs the right to grant it."""
        with self._reader_lock:
            try:
                grant_robot(self._reader, role)
            except self._psycopg.Error as err:
                raise MemoryStoreError("grant", _first_line(err)) from None

    # --- state --------------------------------------------------------------------------------------------------

    def pg_stats(self) -> PostgresStats:
        with self._queue_lock:
            queued = len(self._queue)
        c = self._count
        return PostgresStats(self._reader_ok and self._writer_ok, queued, c["written"], c["dropped_writes"],
                             c["write_failures"], c["search_failures"], c["reconnects"], self._last_error)

    def stats(self):
        """A :class:`MemoryStats` (local-store fields that have no meaning here are 0) with the database's
        counters (``store``, ``write_queue``, ``search_failures``, ...)."""
        from cmr_fusion_ros.core.memory.scene import MemoryStats

        pg = self.pg_stats()
        return MemoryStats(
            entries=len(self), entries_by_modality={}, slots=0, tombstones=0, dim=self._dim,
            backend=f"postgres/{'hnsw' if self._approximate else 'exact'}", index_ready=True,
            next_id=self._block << _BLOCK_BITS | self._next_n, added=self._count["added"],
            skipped_duplicate=self._count["skipped_duplicate"], skipped_capacity=0, evicted=0,
            cleared=self._count["cleared"], compactions=0, search_retries=0,
            exact_fallbacks=self._count["exact_fallbacks"], flushes=self._count["flushes"], snapshots=0,
            pending_records=pg.write_queue, generation=0, directory="", torn_tail_bytes=0, index_loaded=True,
            load_seconds=0.0, store="postgres", robot=self._robot, connected=pg.connected,
            write_queue=pg.write_queue, dropped_writes=pg.dropped_writes, write_failures=pg.write_failures,
            search_failures=pg.search_failures,
        )

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until the queue is written (at most ``timeout_s``). Returns how many entries are still queued."""
        deadline = time.monotonic() + timeout_s
        with self._queue_lock:
            while self._queue and time.monotonic() < deadline and self._writer.is_alive():
                self._queue_lock.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            left = len(self._queue)
        self._count["flushes"] += 1
        return left

    def snapshot(self) -> bool:
        """Nothing to do: the database is the durable copy. Returns False (as a RAM-only local memory)."""
        return False

    def close(self, timeout_s: float = 10.0) -> int:
        """Write what is queued (at most ``timeout_s`` while the database is away), stop, disconnect. Returns how
        many queued entries could not be written (lost). Idempotent."""
        if self._closed:
            return 0
        self._stop_deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        with self._queue_lock:
            self._stop = True
            self._queue_lock.notify_all()
        self._writer.join(timeout=timeout_s + self._config.postgres.retry_interval_s + 1)
        with self._queue_lock:
            lost = len(self._queue)
            self._queue.clear()
        self._closed = True
        for conn in (self._reader, self._writer_conn):
            if conn is not None:
                try:
                    conn.close()
                except self._psycopg.Error:
                    pass
        return lost

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise MemoryStoreError(op, "the memory is closed")

    _stop_deadline = math.inf


def _row(e: MemoryEntry) -> tuple:
    p = e.pose
    pose = None if p is None else [p.x, p.y, p.z, p.qx, p.qy, p.qz, p.qw]
    return (e.id, e.robot, e.session, _CODE[e.modality], e.topic, e.frame_id, e.stamp_ns, pose, e.vector)


def _entry(r: Sequence[Any]) -> MemoryEntry:
    eid, robot, session, mod, topic, frame, stamp, pose, emb = r[:9]
    vec = np.asarray(emb.to_numpy() if hasattr(emb, "to_numpy") else emb, np.float32)
    vec.flags.writeable = False
    return MemoryEntry(int(eid), MODALITIES[mod], topic, frame, int(stamp), None if pose is None else Pose(*pose),
                       session, vec, robot)
