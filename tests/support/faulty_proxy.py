"""A small HTTP proxy in front of Envoy that fails the calls a test asks it to, and records
every call it gets: how a client's retries are seen from the outside."""

import http.client
import http.server
import json
import threading
import time
from dataclasses import dataclass, field

from harness.ports import free_port

# Hop-by-hop headers, which a proxy does not pass on.
_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te"}


@dataclass(frozen=True)
class Fault:
    """How one call fails: `status` (with `retry_after` seconds when set) answered in place of
    Envoy's, either before the call reaches Envoy or, with `after_forwarding`, once Envoy
    has handled it (the write landed, its answer is lost); status 0 closes the connection
    with no answer."""

    status: int
    retry_after: str | None = None
    after_forwarding: bool = False


@dataclass
class Seen:
    """One call the proxy got: when (time.monotonic()), what, and what it answered."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: object
    status: int = 0


@dataclass
class _Plan:
    upstream: int
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyProxy:
    """On a free loopback port, forwarding to 127.0.0.1:`upstream` unless a fault is due."""

    def __init__(self, upstream: int = 0):
        self._plan = _Plan(upstream)
        handler = _handler(self._plan)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
        # A client's idle keep-alive connection must not hold up stop().
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def reset(self, upstream: int) -> None:
        """Forward to `upstream` from now on, with no fault due and nothing seen."""
        with self._plan.lock:
            self._plan.upstream = upstream
            self._plan.faults.clear()
            self._plan.seen.clear()

    def fail_next(self, *faults: Fault) -> None:
        """The next calls fail as `faults` say, one each, in order."""
        with self._plan.lock:
            self._plan.faults.extend(faults)

    @property
    def seen(self) -> list[Seen]:
        with self._plan.lock:
            return list(self._plan.seen)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(plan: _Plan) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - its name
            pass

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            seen = Seen(time.monotonic(), self.command, self.path, headers,
                        json.loads(raw) if raw else None)
            with plan.lock:
                plan.seen.append(seen)
                fault = plan.faults.pop(0) if plan.faults else None
                upstream = plan.upstream
            if fault is not None and fault.status == 0:
                self.close_connection = True  # closed once this returns, with no answer
                return
            if fault is None or fault.after_forwarding:
                status, reply_headers, body = _forward(upstream, self.command, self.path,
                                                       headers, raw)
            if fault is not None:
                status, body = fault.status, json.dumps(
                    {"code": 14, "message": f"fault injected by the test: {fault.status}",
                     "details": []}).encode()
                reply_headers = [("content-type", "application/json")]
                if fault.retry_after is not None:
                    reply_headers.append(("retry-after", fault.retry_after))
            seen.status = status
            self.send_response(status)
            for name, value in reply_headers:
                if name.lower() not in _HOP | {"content-length"}:
                    self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def _forward(upstream: int, method: str, path: str, headers: dict[str, str],
             body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=20)
    try:
        sent = {name: value for name, value in headers.items() if name not in _HOP}
        conn.request(method, path, body=body or None, headers=sent)
        reply = conn.getresponse()
        return reply.status, reply.getheaders(), reply.read()
    finally:
        conn.close()
