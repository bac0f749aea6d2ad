"""Envoy's own answers, through the real Envoy from envoy.yaml: every reply it makes itself
is JSON with a message and the gRPC code that fits its status (docs/kapso.md's "Envoy's
own answers" table, row by row); a JSON body must say it is JSON; gRPC framing on a JSON path
is refused at once; each API key has its own rate limit; and the access log records the
gRPC status the server really returned."""

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from deploy.envoy_config import Config, load, rate_limit, with_rate_limit
from harness.envoy import EnvoyProcess, envoy_config
from harness.http_calls import raw_exchange
from harness.ports import free_port
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer
from tests.support.databases import write_lock
from tests.support.docs import docs_section
from tests.support.helpers import PHONE
from tests.support.servers import serving
from tests.support.stack import MakeRunStack

# The Envoy under test is envoy.yaml with three settings made small enough to reach in a
# test: the whole request must arrive within 2 s (60 s in envoy.yaml), each API key may
# make 3 calls an hour (2,000 at once and 300 a second in envoy.yaml: too many to spend in
# a test; tests/e2e/test_rate_limit.py sends a campaign through those), and a write must be
# answered within 2 s (the 15 s route timeout in envoy.yaml).
REQUEST_TIMEOUT = "2s"
WRITE_ROUTE_TIMEOUT = "2s"
CALLS_PER_KEY = 3
_SHIPPED_BURST = rate_limit(load())[2]
_workspaces = itertools.count()


def _small_limits(config: Config) -> Config:
    limited = with_rate_limit(config, CALLS_PER_KEY, seconds=3600)
    listener = limited["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["request_timeout"] = REQUEST_TIMEOUT
    [writes] = [route for route in manager["route_config"]["virtual_hosts"][0]["routes"]
                if route["name"] == "grpc_writes"]
    writes["route"]["timeout"] = WRITE_ROUTE_TIMEOUT
    return limited


@dataclass
class Edge:
    server: RunningServer
    database_url: str
    envoy: EnvoyProcess  # in front of the server
    down: EnvoyProcess  # in front of a port nobody serves

    def send(self, data: bytes, *, to_down: bool = False) -> tuple[int, dict[str, str], object]:
        envoy = self.down if to_down else self.envoy
        return raw_exchange("127.0.0.1", envoy.port, data)

    def send_while_writes_wait(self, data: bytes) -> tuple[int, dict[str, str], object]:
        """`data` sent while another connection holds the database's write lock: a write
        waits for it (up to the server's 5 s), longer than the write route's timeout."""
        with write_lock(self.database_url):
            return self.send(data)

    def get_lead(self, workspace: str) -> dict[str, object]:
        status, _, lead = self.send(_http("GET", f"/sarah/state?contact_phone=%2B6281234567890"
                                                 f"&workspace_id={workspace}"))
        assert status == 200 and isinstance(lead, dict), lead
        return lead


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    workdir = tmp_path_factory.mktemp("edge-replies")
    url = f"sqlite:///{workdir / 'sarah.db'}"
    with serving(url) as server:
        envoy = EnvoyProcess(server.port, workdir, derive=_small_limits)
        try:
            down = EnvoyProcess(free_port(), workdir, name="envoy-down")
            try:
                envoy.wait_healthy(1)
                yield Edge(server, url, envoy, down)
            finally:
                down.stop()
        finally:
            envoy.stop()


def _http(method: str, path: str, body: bytes = b"", *, version: str = "1.1",
          **headers: str) -> bytes:
    """One request as bytes; header names as given, `_` turned into `-` unless quoted."""
    lines = [f"{method} {path} HTTP/{version}", "host: sarah" if version == "1.1" else ""]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"content-length: {len(body)}")
    head = "\r\n".join(line for line in lines if line) + "\r\n\r\n"
    return head.encode() + body


_BODY = json.dumps({"contact_phone": PHONE, "lead_score": 9}).encode()


def _json_post(**headers: str) -> bytes:
    return _http("POST", "/sarah/state", _BODY, content_type="application/json", **headers)


def _ordinal(n: int) -> str:
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n:,}{suffix}"


@dataclass(frozen=True)
class Reply:
    what: str  # the docs' words
    example: str  # the docs' spelling of the request
    sent: bytes
    status: int
    code: int | None  # None: not an error
    says: str = ""  # a part of `message`
    to_down: bool = False  # sent to the Envoy whose server is down
    slow: bool = False  # sent while the server's writes wait for the database
    calls_before: int = 0  # the same request sent this many times first


REPLIES = [
    Reply("an unknown path", "`GET /sarah/nope`", _http("GET", "/sarah/nope"), 404, 5,
          "Could not resolve /sarah/nope"),
    Reply("an escaped slash in the path", "`GET /sarah/%2Fstats`",
          _http("GET", "/sarah/%2Fstats"), 400, 3, "escaped slash"),
    Reply("an underscore in a header name", "`x_api_key: KEY`",
          b"GET /sarah/stats HTTP/1.1\r\nhost: sarah\r\nx_api_key: KEY\r\n\r\n", 400, 3,
          "use dashes (x-api-key, not x_api_key)"),
    Reply("a POST body sent as `text/plain` (a cross-site form can send this)",
          "`content-type: text/plain`",
          _http("POST", "/sarah/state", _BODY, content_type="text/plain"), 415, 3,
          "content-type must be application/json"),
    Reply("a POST body sent as a form", "`content-type: application/x-www-form-urlencoded`",
          _http("POST", "/sarah/identity", _BODY,
                content_type="application/x-www-form-urlencoded"), 415, 3,
          "content-type must be application/json"),
    Reply("a POST body without a `content-type`", "`POST /sarah/state` with no `content-type`",
          _http("POST", "/sarah/state", _BODY), 415, 3, "content-type must be application/json"),
    Reply("JSON in another charset", "`content-type: application/json; charset=latin1`",
          _http("POST", "/sarah/state", _BODY, content_type="application/json; charset=latin1"),
          415, 3, "content-type must be application/json"),
    Reply("a `DELETE` that says its type is not JSON", "`DELETE` with `content-type: text/plain`",
          _http("DELETE", "/sarah/state?contact_phone=%2B6281234567890",
                content_type="text/plain"), 415, 3, "content-type must be application/json"),
    Reply("a body over 1 MiB", "`POST` of 2 MiB",
          _http("POST", "/sarah/state", b"{" + b" " * (2 << 20) + b"}",
                content_type="application/json"), 413, 8, "Payload Too Large"),
    Reply("a URL and headers over 4 KiB", "`GET /sarah/stats?utm=x…(4 KiB)`",
          _http("GET", "/sarah/stats?utm=" + "x" * 4096), 431, 8,
          "Request Header Fields Too Large"),
    Reply("a body that stops arriving", "`content-length: 100` and 10 bytes sent",
          _http("POST", "/sarah/state", b'{"contact_', content_type="application/json")
          .replace(b"content-length: 10", b"content-length: 100"), 408, 4,
          "did not arrive in time"),
    # The docs name envoy.yaml's limit; the Envoy here has CALLS_PER_KEY calls a key.
    Reply("one API key over its rate limit",
          f"the {_ordinal(_SHIPPED_BURST + 1)} call at once with one `x-api-key`",
          _json_post(x_api_key="a-key-of-its-own"), 429, 8, "too many requests for this API key",
          calls_before=CALLS_PER_KEY),
    Reply("no healthy server behind Envoy", "any call while the server is down",
          _http("GET", "/sarah/stats"), 503, 14, "no healthy upstream", to_down=True),
    Reply("a call the server answers after the 15 s route timeout",
          "a write that waits that long for the database",
          _json_post(), 504, 4, "no answer within the 15 s route timeout", slow=True),
    Reply("HTTP/1.0, with or without `host`", "`GET /sarah/stats HTTP/1.0`",
          _http("GET", "/sarah/stats", version="1.0"), 200, None),
]


def _render(row: Reply) -> str:
    answer = f"{row.status}, code {row.code}" if row.code is not None else f"{row.status}, accepted"
    return f"| {row.what} | {row.example} | {answer} | {f'`{row.says}`' if row.says else '—'} |"


@pytest.mark.parametrize("row", REPLIES, ids=[r.what for r in REPLIES])
def test_envoy_answers_json_with_a_message_and_the_fitting_code(edge: Edge, row: Reply) -> None:
    for _ in range(row.calls_before):
        assert edge.send(row.sent)[0] == 200
    status, headers, reply = (edge.send_while_writes_wait(row.sent) if row.slow
                              else edge.send(row.sent, to_down=row.to_down))
    assert status == row.status, reply
    assert headers["content-type"].startswith("application/json"), headers
    if row.code is None:
        assert isinstance(reply, dict) and "code" not in reply, reply
        return
    assert isinstance(reply, dict) and set(reply) == {"code", "message"}, reply
    assert reply["code"] == row.code and row.says in reply["message"], reply
    if status == 429:
        assert headers["retry-after"] == "3600", headers
    if status == 503:  # no healthy server (a database failing over): retry shortly
        assert headers["retry-after"] == "1", headers


def test_the_docs_list_exactly_the_replies_checked_here() -> None:
    section = docs_section("docs/kapso.md", "Envoy's own answers")
    rows = [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| Envoy is sent ", "| --- "))]
    assert rows == [*map(_render, REPLIES)]


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None, "application/jsonp", "application/json-patch+json",
])
@pytest.mark.parametrize("path", ["/sarah/state", "/sarah/identity"])
def test_a_body_not_declared_json_writes_nothing(edge: Edge, path: str,
                                                 content_type: str | None) -> None:
    """What a web page can send cross-site without a CORS preflight (text/plain, a form,
    multipart) is refused before it reaches the server."""
    workspace = f"ct-{next(_workspaces)}"
    body = json.dumps({"contact_phone": PHONE, "workspace_id": workspace, "lead_score": 50,
                       "new_contact_phone": "+6281299990000"}).encode()
    headers = {} if content_type is None else {"content_type": content_type}
    status, _, reply = edge.send(_http("POST", path, body, **headers))
    assert status == 415 and isinstance(reply, dict), reply
    assert reply["code"] == 3 and "content-type" in reply["message"], reply
    assert edge.get_lead(workspace)["etag"] == "", "nothing was written"


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
    'application/json; charset="utf-8"',
])
def test_json_with_or_without_its_charset_is_written(edge: Edge, content_type: str) -> None:
    workspace = f"ct-{next(_workspaces)}"
    body = json.dumps({"contact_phone": PHONE, "workspace_id": workspace, "lead_score": 51})
    status, _, lead = edge.send(_http("POST", "/sarah/state", body.encode(),
                                      content_type=content_type))
    assert status == 200 and isinstance(lead, dict) and lead["lead_score"] == 51, lead
    assert edge.get_lead(workspace)["lead_score"] == 51


def test_a_delete_needs_no_content_type(edge: Edge) -> None:
    status, _, reply = edge.send(_http("DELETE", "/sarah/state?contact_phone=%2B6281234567890"
                                                 "&workspace_id=ct-delete"))
    assert status == 200 and reply == {"deleted": False}, reply


def test_grpc_framing_on_a_json_path_is_refused_at_once(edge: Edge) -> None:
    """curl -H 'content-type: application/grpc' to a JSON path, and a gRPC client calling a
    method path that is no method: UNIMPLEMENTED, naming what to send instead, and nothing
    reaches the server (it used to be reset, retried, and answered UNAVAILABLE)."""
    before = edge.envoy.stat("cluster.sarah_grpc.upstream_rq_total")
    status, headers, _ = edge.send(_http("POST", "/sarah/state", _BODY,
                                         content_type="application/grpc"))
    assert status == 200 and headers["grpc-status"] == "12", headers
    assert "content-type: application/json" in headers["grpc-message"], headers
    with grpc.insecure_channel(f"127.0.0.1:{edge.envoy.port}") as channel:
        call = channel.unary_unary("/sarah/state")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "content-type: application/json" in (caught.value.details() or "")
    assert edge.envoy.stat("cluster.sarah_grpc.upstream_rq_total") == before


def test_each_api_key_has_its_own_rate_limit(edge: Edge) -> None:
    limited, other = _json_post(x_api_key="kapso-project-a"), _json_post(x_api_key="kapso-b")
    answers = [edge.send(limited)[0] for _ in range(CALLS_PER_KEY + 2)]
    assert answers == [200] * CALLS_PER_KEY + [429, 429]
    assert [edge.send(other)[0] for _ in range(CALLS_PER_KEY)] == [200] * CALLS_PER_KEY
    # A bearer token is a key too, counted on its own.
    bearer = _json_post(authorization="Bearer kapso-project-a")
    assert [edge.send(bearer)[0] for _ in range(CALLS_PER_KEY + 1)] == [200] * CALLS_PER_KEY + [
        429]
    # Calls without a key are not limited here (the server decides whether they may call).
    assert {edge.send(_json_post())[0] for _ in range(CALLS_PER_KEY * 3)} == {200}
    # A gRPC caller over its key's limit gets RESOURCE_EXHAUSTED.
    with grpc.insecure_channel(f"127.0.0.1:{edge.envoy.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        metadata = (("x-api-key", "kapso-grpc"),)
        for _ in range(CALLS_PER_KEY):
            stub.GetStats(pb.GetStatsRequest(), metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetStats(pb.GetStatsRequest(), metadata=metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _logged(envoy: EnvoyProcess, request_id: str) -> dict[str, object]:
    """The access log line of one request (Envoy flushes its log every second)."""
    def line() -> dict[str, object] | None:
        for text in Path(envoy.log_path).read_text(errors="replace").splitlines():
            if request_id in text and text.startswith("{"):
                entry: dict[str, object] = json.loads(text)
                return entry
        return None

    wait_until(line, 15, f"the access log line of {request_id}")
    found = line()
    assert found is not None
    return found


def test_the_access_log_records_the_status_the_server_returned(edge: Edge) -> None:
    workspace = f"log-{next(_workspaces)}"
    post = {"contact_phone": PHONE, "workspace_id": workspace}
    cases: list[tuple[bytes, int, str | None]] = [
        (_http("POST", "/sarah/state", json.dumps({**post, "lead_score": 140}).encode(),
               content_type="application/json"), 400, "3"),  # INVALID_ARGUMENT, not 13
        (_http("POST", "/sarah/state", json.dumps(post).encode(),
               content_type="application/json"), 200, "0"),
        (_http("POST", "/sarah/state", json.dumps({**post, "etag": "stale"}).encode(),
               content_type="application/json"), 409, "10"),  # ABORTED, not 2
        (_http("POST", "/sarah/identity", json.dumps(
            {"workspace_id": workspace, "contact_phone": "+6281200000001",
             "new_contact_phone": "+6281200000002"}).encode(),
            content_type="application/json"), 404, "5"),  # NOT_FOUND, not 12
        # Envoy answered itself: the server returned nothing.
        (_http("POST", "/sarah/state", _BODY, content_type="text/plain"), 415, None),
    ]
    for sent, status, grpc_status in cases:
        answered, headers, reply = edge.send(sent)
        assert answered == status, reply
        entry = _logged(edge.envoy, headers["x-request-id"])
        assert (entry["status"], entry["grpc_status"]) == (status, grpc_status), entry
    # Native gRPC: the status from the server's trailers, error or not.
    with grpc.insecure_channel(f"127.0.0.1:{edge.envoy.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        _, call = stub.GetStats.with_call(pb.GetStatsRequest(), timeout=10)
        ok_id = dict(call.initial_metadata())["x-request-id"]
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetState(pb.GetStateRequest(contact_phone="08123"), timeout=10)
        # A trailers-only answer: its headers arrive as trailing metadata.
        error = caught.value
        bad_id = dict([*error.initial_metadata(), *error.trailing_metadata()])["x-request-id"]
    assert _logged(edge.envoy, str(ok_id))["grpc_status"] == "0"
    assert _logged(edge.envoy, str(bad_id))["grpc_status"] == "3"



def test_make_runs_stack_takes_a_rate_limit_flag(tmp_path: Path) -> None:
    """`python -m tools.stack --rate-limit 2/3600s` (the rest goes to the server): the third
    call of one key within the hour is a 429 that says when to come back."""
    http_port, admin_port, grpc_port = free_port(), free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(http_port, admin_port, grpc_port))
    stack = MakeRunStack(tmp_path, config, grpc_port=grpc_port, http_port=http_port,
                         admin_port=admin_port, flags=("--rate-limit", "2/3600s"))
    try:
        answers = [raw_exchange("127.0.0.1", http_port, _json_post(x_api_key="k"))
                   for _ in range(3)]
    finally:
        out = stack.stop()
    assert [status for status, _, _ in answers] == [200, 200, 429], out
    _, headers, reply = answers[2]
    assert headers["retry-after"] == "3600" and isinstance(reply, dict) and reply["code"] == 8
