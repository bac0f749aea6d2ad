"""WatchLeads through the real Envoy: Server-Sent Events for HTTP callers (one `data:`
line and a blank line per event), native gRPC streaming, no timeout cutting a live
stream, and errors as JSON."""

import http.client
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy.envoy_config import Config as EnvoyConfig
from harness.envoy import EnvoyProcess
from harness.processes import ServerProcess
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.config import Config
from tests.support import contract_shapes as shapes
from tests.support.databases import new_database_url

PHONE = "+6281234567890"
ROUTE_TIMEOUT_S = 15  # envoy.yaml's, on every route but the watch routes
WATCH_ROUTES = {"grpc_watch", "json_watch"}
# The Envoy of the route timeout test runs 15/2 times faster than envoy.yaml's: its route
# timeout is 2 s.
SHORT_ROUTE_TIMEOUT_S = 2
_SCALE = SHORT_ROUTE_TIMEOUT_S / ROUTE_TIMEOUT_S


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


def _served_routes(envoy: EnvoyProcess) -> dict[str, dict]:
    """The route table the running Envoy holds (its admin config dump): name -> action."""
    status, _, dump = envoy.call_admin("/config_dump?resource=static_route_configs")
    assert status == 200 and isinstance(dump, dict), dump
    [config] = dump["configs"]
    [host] = config["route_config"]["virtual_hosts"]
    return {route["name"]: route.get("route") for route in host["routes"]}


def test_only_the_watch_routes_lift_envoys_15_s_timeouts(edge: EnvoyProcess) -> None:
    forwarded = {name: action for name, action in _served_routes(edge).items() if action}
    assert set(forwarded) > WATCH_ROUTES, forwarded
    for name, action in forwarded.items():
        if name in WATCH_ROUTES:
            # 0s: none. No stream duration cap either: a watch lasts as long as its caller.
            assert (action["timeout"], action["idle_timeout"]) == ("0s", "0s"), name
            assert "max_stream_duration" not in action, name
        else:
            assert action["timeout"] == f"{ROUTE_TIMEOUT_S}s", name
            assert action.get("idle_timeout", f"{ROUTE_TIMEOUT_S}s") == f"{ROUTE_TIMEOUT_S}s"
            if "max_stream_duration" in action:  # then Envoy ignores `timeout`
                limits = action["max_stream_duration"]
                assert limits["max_stream_duration"] == f"{ROUTE_TIMEOUT_S}s", name
    # A quiet stream still says something before any idle timer of 15 s would run out.
    assert Config().watch_heartbeat_seconds <= ROUTE_TIMEOUT_S


def _scaled_timeouts(config: EnvoyConfig) -> EnvoyConfig:
    """envoy.yaml with every timeout of its HTTP listener (the routes' 15 s, the stream idle
    timeout, the request timeouts) scaled by _SCALE, so that they keep their proportions to
    each other and to the server's heartbeat, scaled alike. The clusters' connect and
    health check timeouts stay as they are."""
    listener = config["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]

    def scale(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                scale(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key.endswith("timeout") and isinstance(value, str) and value.endswith("s"):
                    node[key] = f"{float(value[:-1]) * _SCALE:.3f}s"
                else:
                    scale(value)

    scale(manager)
    return config


def test_a_server_sent_event_stream_outlives_envoys_route_timeout(tmp_path: Path) -> None:
    """One stream with the server's default heartbeats (15 s), through envoy.yaml as it is,
    both run 15/2 times faster (a 2 s route timeout, heartbeats every 2 s): a change made
    past the route timeout still arrives. The timeout is Envoy's, not the database's, so
    SQLite alone."""
    heartbeat_s = Config().watch_heartbeat_seconds * _SCALE
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url",
                           f"sqlite:///{tmp_path / 'sarah.db'}",
                           "--watch-heartbeat-seconds", f"{heartbeat_s:g}")
    envoy = EnvoyProcess(server.port, tmp_path, derive=_scaled_timeouts)
    try:
        envoy.wait_healthy(1)
        # The timeout the stream must outlive is in force on the routes around it.
        served = _served_routes(envoy)
        assert served["grpc_writes"]["timeout"] == f"{SHORT_ROUTE_TIMEOUT_S}s", served
        opened = time.monotonic()
        # Its response headers come with the first message: the server's first heartbeat,
        # after a heartbeat's silence. Then, past the route timeout, a change is made.
        stream = _Sse(envoy.port, "?workspace_id=long&since_revision=0", timeout=30)
        try:
            assert stream.response.status == 200
            assert stream.event()["kind"] == "heartbeat"
            time.sleep(max(0.0, SHORT_ROUTE_TIMEOUT_S + 1 - (time.monotonic() - opened)))
            _upsert(envoy, contact_phone=PHONE, workspace_id="long", lead_score=17)
            [event] = stream.events(1)
            assert event["conversation"]["lead_score"] == 17
        finally:
            stream.close()
    finally:
        envoy.stop()
        server.stop(signal.SIGKILL)


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
