"""A loopback TCP port relaying each connection to a Unix socket: the embedded PostgreSQL
listens on a socket only, in a folder only its own user may enter, and containers on the
host's network reach its loopback but not its files."""

import contextlib
import socket
import threading
from urllib.parse import parse_qs, urlparse

_CHUNK = 65536


class UnixRelay:
    """127.0.0.1:`port` -> the Unix socket at `path`, a pair of threads per connection."""

    def __init__(self, path: str):
        self._path = path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                caller, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                server.connect(self._path)
            except OSError:
                caller.close()
                continue
            self._open += [caller, server]
            for source, sink in ((caller, server), (server, caller)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()
        for sock in self._open:
            sock.close()


def postgres_socket(url: str) -> str:
    """The socket file of a URL naming a Unix-socket PostgreSQL (`?host=FOLDER`)."""
    parsed = urlparse(url)
    [folder] = parse_qs(parsed.query)["host"]
    return f"{folder}/.s.PGSQL.{parsed.port or 5432}"


def over_tcp(url: str, port: int) -> str:
    """The same database and user, reached on 127.0.0.1:`port` instead of the socket."""
    parsed = urlparse(url)
    return f"postgresql://{parsed.username}@127.0.0.1:{port}{parsed.path}"
