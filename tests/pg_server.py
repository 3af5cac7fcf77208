"""A real PostgreSQL + pgvector server for the tests: ``cmr-fusion memory-server`` started in a temporary folder.

``pg_server`` (one per test module, with loopback TCP for password logins) and ``pg_uri`` (a fresh database on it
per test). Import both into a test module: ``from tests.pg_server import pg_server, pg_uri  # noqa: F401``.

The data folder is ``server_dir()``, a folder of its own under the system temp folder, not pytest's ``tmp_path``:
run as root, the server runs as the unprivileged user ``pgserver`` and must traverse every parent folder, and each
pytest session sets its base folder (``/tmp/pytest-of-root``) back to 0700, which would lock a running server out
as soon as another test session starts on the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``cmr-fusion memory-server --data DIR --port P`` as a child process."""

    def __init__(self, data: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.data, self.port, self.extra = data, port, extra
        self.proc: subprocess.Popen | None = None
        self.uri = self.tcp_uri = ""

    def start(self, timeout_s: float = 90.0) -> "PgServer":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "cmr_fusion_ros.cli", "memory-server", "--data", str(self.data)]
        if self.port:
            cmd += ["--port", str(self.port)]
        cmd += list(self.extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + timeout_s
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("uri: "):
                self.uri = line.split(" ", 1)[1].strip()
                if self.port:
                    self.tcp_uri = self.proc.stdout.readline().split()[1]
                return self
        self.proc.kill()
        raise RuntimeError("memory-server did not print its uri:\n" + "".join(lines))

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill9(self) -> None:
        """SIGKILL the PostgreSQL server and its backends (a crash); memory-server then exits by itself."""
        pm = psutil.Process(self.postmaster_pid)
        procs = [pm, *pm.children(recursive=True)]
        for p in procs:
            p.kill()
        psutil.wait_procs(procs, timeout=10)
        self.proc.wait(timeout=10)

    def why_gone(self) -> str:
        """For a test that cannot connect: whether the server still runs, the end of PostgreSQL's log and the free
        disk (a full disk stops the server: "could not write ... No space left on device")."""
        state = "running" if self.proc is not None and self.proc.poll() is None else \
            f"exited with {None if self.proc is None else self.proc.returncode}"
        log = self.data / "log"
        tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else ["(no log file)"]
        free = shutil.disk_usage(self.data.parent).free / 2**30 if self.data.parent.exists() else float("nan")
        return (f"memory-server {state}; {free:.1f} GB free in {self.data.parent}; {log} ends:\n  "
                + "\n  ".join(tail))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def server_dir():
    """A new folder for a server's data, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cmr_test_pg_"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def with_db(uri: str, dbname: str, user: str | None = None) -> str:
    p = urlsplit(uri)
    netloc = p.netloc
    if user is not None:
        netloc = f"{user}@{netloc.split('@', 1)[-1]}" if "@" in netloc else f"{user}@{netloc}"
    return urlunsplit(p._replace(path=f"/{dbname}", netloc=netloc))


@pytest.fixture(scope="module")
def pg_server():
    with server_dir() as path:
        server = PgServer(path / "data", port=free_port()).start()
        yield server
        server.stop()


_DB_COUNT = [0]


@pytest.fixture
def pg_uri(pg_server) -> str:
    """A new, empty database with pgvector on the module's server; the admin URI (Unix socket)."""
    import psycopg

    _DB_COUNT[0] += 1
    name = f"t{os.getpid()}_{_DB_COUNT[0]}"
    try:
        conn = psycopg.connect(pg_server.uri, autocommit=True)
    except psycopg.OperationalError as err:
        conn, why = None, f"{err}\n{pg_server.why_gone()}"
    if conn is None:
        pytest.fail(why, pytrace=False)
    with conn:
        conn.execute(f"CREATE DATABASE {name}")
    uri = with_db(pg_server.uri, name)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    return uri
