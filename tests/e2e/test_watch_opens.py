"""A watch opens at once (contract v1.2, "Live changes, sharpened"): with nothing new to
send and the heartbeat 15 s away, the 200 and `text/event-stream` through Envoy, and the
initial metadata over gRPC, arrive as soon as the key, the workspace and `since_revision`
have been checked, on every worker; a refused watch still answers its JSON error."""

import http.client
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from harness.envoy import EnvoyProcess
from harness.processes import ServerProcess, start_workers
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.databases import new_database_url

KEY = "dashboard-key-4c1f"
# The contract's bound for the headers; the heartbeat (15 s) is far beyond it, so only a
# stream that opens at once can meet it.
OPENS_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, backend: str,
         request: pytest.FixtureRequest) -> Iterator[tuple[ServerProcess, EnvoyProcess]]:
    workdir = tmp_path_factory.mktemp("watch-opens")
    keys = workdir / "keys.txt"
    keys.write_text(f"{KEY} toko dashboard\n")
    # Two workers, each its own port behind Envoy: every replica must open at once.
    server = start_workers(2, new_database_url(backend, workdir, request),
                           "--api-keys-file", str(keys))
    envoy = EnvoyProcess(server.ports, workdir)
    envoy.wait_healthy(2)
    status, _, reply = envoy.call("POST", "/sarah/state",
                                  {"workspace_id": "toko", "contact_phone": "+6281234567890",
                                   "add_messages": 1}, headers={"x-api-key": KEY})
    assert status == 200, reply
    yield server, envoy
    envoy.stop()
    server.stop(signal.SIGKILL)


def _open_watch(port: int, query: str, key: str | None = KEY
                ) -> tuple[float, http.client.HTTPResponse, http.client.HTTPConnection]:
    """GET /sarah/watch and wait for its status line: (seconds it took, response, conn)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    started = time.monotonic()
    conn.request("GET", "/sarah/watch" + query, headers={"x-api-key": key} if key else {})
    response = conn.getresponse()
    return time.monotonic() - started, response, conn


def _revision(envoy: EnvoyProcess) -> str:
    status, _, reply = envoy.call("GET", "/sarah/stats?workspace_id=toko",
                                  headers={"x-api-key": KEY})
    assert status == 200, reply
    assert isinstance(reply, dict)
    return str(reply["revision"])


def test_a_quiet_watch_gets_its_200_and_event_stream_at_once_on_every_worker(
        edge: tuple[ServerProcess, EnvoyProcess]) -> None:
    _, envoy = edge
    head = _revision(envoy)
    # Four watches, so Envoy's balancing reaches both workers; each from the current
    # revision (nothing to send) and from now on.
    for query in (f"?workspace_id=toko&since_revision={head}", "?workspace_id=toko") * 2:
        took, response, conn = _open_watch(envoy.port, query)
        try:
            assert response.status == 200
            assert response.getheader("content-type", "").startswith("text/event-stream")
            assert took < OPENS_WITHIN_S, f"{query}: headers after {took:.1f} s"
        finally:
            conn.close()


@pytest.mark.parametrize(("query", "key", "status"), [
    ("?workspace_id=toko&since_revision=-1", KEY, 400),
    ("?workspace_id=toko&since_revision=99999999", KEY, 400),
    ("?workspace_id=toko", None, 401),
    ("?workspace_id=toko", "wrong-key", 401),
    ("?workspace_id=another", KEY, 403),
])
def test_a_refused_watch_answers_its_json_error_never_a_200(
        edge: tuple[ServerProcess, EnvoyProcess], query: str, key: str | None,
        status: int) -> None:
    _, envoy = edge
    _, response, conn = _open_watch(envoy.port, query, key)
    try:
        assert response.status == status
        assert response.getheader("content-type", "").startswith("application/json")
        assert b'"message"' in response.read()
    finally:
        conn.close()


def _collect_initial_metadata(call: grpc.Call, into: list[object]) -> None:
    into.append(call.initial_metadata())


def test_over_grpc_the_initial_metadata_comes_before_any_event(
        edge: tuple[ServerProcess, EnvoyProcess]) -> None:
    server, _ = edge
    for port in server.ports:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            call = stub.WatchLeads(pb.WatchLeadsRequest(workspace_id="toko"),
                                   metadata=(("x-api-key", KEY),), timeout=20)
            got: list[object] = []
            reader = threading.Thread(target=_collect_initial_metadata, args=(call, got),
                                      daemon=True)
            started = time.monotonic()
            reader.start()
            reader.join(OPENS_WITHIN_S)
            took = time.monotonic() - started
            call.cancel()
            assert got, f"port {port}: no initial metadata after {took:.1f} s"


def test_erasure_wins_over_delivery(tmp_path: Path, backend: str,
                                    request: pytest.FixtureRequest) -> None:
    """A lead erased before a watcher caught up with its earlier events: the watcher gets
    only its `deleted` event, never the erased personal data."""
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url",
                           new_database_url(backend, tmp_path, request))
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            head = stub.GetStats(pb.GetStatsRequest()).revision
            stub.UpsertState(pb.UpsertStateRequest(
                contact_phone="+6281234567890", extracted_data=pb.ExtractedData(name="Budi")))
            stub.UpsertState(pb.UpsertStateRequest(
                contact_phone="+6281298765432", extracted_data=pb.ExtractedData(name="Sari")))
            stub.DeleteState(pb.DeleteStateRequest(contact_phone="+6281234567890"))
            call = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=head), timeout=20)
            seen = []
            for event in call:
                seen.append((event.kind, event.conversation.contact_phone,
                             event.conversation.extracted_data.name))
                if len(seen) == 2:
                    break
            call.cancel()
    finally:
        server.stop(signal.SIGKILL)
    assert seen == [(pb.upserted, "+6281298765432", "Sari"),
                    (pb.deleted, "+6281234567890", "")]
