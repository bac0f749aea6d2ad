"""WatchLeads through the real Envoy: Server-Sent Events for HTTP callers (one `data:`
line and a blank line per event), native gRPC streaming, no timeout cutting a live
stream, and errors as JSON."""

import http.client
import json
import signal
from collections.abc import Iterator

import grpc
import pytest

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support import contract_shapes as shapes
from tests.support.databases import new_database_url
from tests.support.envoy import EnvoyProcess
from tests.support.processes import ServerProcess

PHONE = "+6281234567890"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, backend: str,
         request: pytest.FixtureRequest) -> Iterator[EnvoyProcess]:
    workdir = tmp_path_factory.mktemp("watch-http")
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url",
                           new_database_url(backend, workdir, request),
                           env={"SARAH_WATCH_HEARTBEAT_SECONDS": "1"})
    envoy = EnvoyProcess(server.port, workdir)
    envoy.wait_healthy(1)
    yield envoy
    envoy.stop()
    server.stop(signal.SIGKILL)


class _Sse:
    """A GET /sarah/watch read line by line, as an EventSource reads it."""

    def __init__(self, port: int, query: str = "", timeout: float = 10):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/sarah/watch" + query)
        self.response = self.conn.getresponse()

    def event(self) -> dict:
        data = []
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            if line in ("\n", "\r\n"):
                if data:
                    return json.loads("".join(data))
                continue
            assert line.startswith("data: "), line
            data.append(line[len("data: "):])

    def events(self, n: int) -> list[dict]:
        got = []
        while len(got) < n:
            event = self.event()
            shapes.check_lead_event(event)
            if event["kind"] != "heartbeat":
                got.append(event)
        return got

    def close(self) -> None:
        self.conn.close()


def _upsert(envoy: EnvoyProcess, **body: object) -> None:
    status, _, reply = envoy.call("POST", "/sarah/state", body)
    assert status == 200, reply


def test_list_then_watch_as_server_sent_events(edge: EnvoyProcess) -> None:
    _upsert(edge, contact_phone=PHONE, workspace_id="sse")
    status, _, page = edge.call("GET", "/sarah/leads?workspace_id=sse")
    assert status == 200
    shapes.check_leads_page(page)
    stream = _Sse(edge.port, f"?workspace_id=sse&since_revision={page['revision']}")
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("content-type", "").startswith("text/event-stream")
        _upsert(edge, contact_phone=PHONE, workspace_id="sse", state="handoff")
        _upsert(edge, contact_phone=PHONE, workspace_id="other")
        [event] = stream.events(1)
        assert event["kind"] == "upserted" and event["changed"] == ["state"]
        assert int(event["revision"]) == int(page["revision"]) + 1
        assert event["conversation"]["state"] == "handoff"
    finally:
        stream.close()


def test_heartbeats_keep_a_quiet_stream_open_past_envoys_timeouts(edge: EnvoyProcess) -> None:
    stream = _Sse(edge.port, "?workspace_id=quiet", timeout=25)
    try:
        beats = [stream.event() for _ in range(3)]
        assert [b["kind"] for b in beats] == ["heartbeat"] * 3
        for beat in beats:
            shapes.check_lead_event(beat)
    finally:
        stream.close()


def test_bad_since_revision_is_a_json_400(edge: EnvoyProcess) -> None:
    for query in ("?since_revision=-1", "?since_revision=abc"):
        status, _, body = edge.call("GET", "/sarah/watch" + query)
        assert status == 400, (query, body)
        shapes.check_error_body(status, body)


def test_native_grpc_streams_through_envoy(edge: EnvoyProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        head = stub.GetStats(pb.GetStatsRequest(), timeout=10).revision
        stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=head), timeout=30)
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, workspace_id="g"),
                         timeout=10)
        event = next(e for e in stream if e.kind != pb.heartbeat)
        stream.cancel()
    assert event.revision == head + 1 and event.conversation.workspace_id == "g"
