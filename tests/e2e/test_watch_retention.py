"""Retention through the real Envoy: GET /sarah/watch resuming from a revision whose later
events were pruned is the contract's OUT_OF_RANGE, a JSON 400 (the gRPC side is in
tests/service/test_watch.py)."""

import signal
import time
from pathlib import Path

import pytest

from client import SarahClient
from harness.envoy import EnvoyProcess
from harness.ports import free_port
from harness.processes import ServerProcess
from harness.waiting import wait_until
from tests.support import contract_shapes as shapes
from tests.support.databases import new_database_url, query

# About 0.9 s of history. Housekeeping runs as a server starts and then once a minute, so
# a restarted server prunes what the one before it wrote.
_RETENTION = {"SARAH_HISTORY_DAYS": "0.00001"}


def test_watch_from_a_pruned_revision_is_a_json_400(
        tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    url = new_database_url(backend, tmp_path, request)
    port = free_port()
    args = ("--listen", f"127.0.0.1:{port}", "--database-url", url)
    server = ServerProcess(*args, env=_RETENTION)
    envoy = EnvoyProcess(port, tmp_path)
    try:
        envoy.wait_healthy(1)
        for i in range(3):
            status, _, reply = envoy.call("POST", "/sarah/state",
                                          {"contact_phone": f"+6281234567{i:03d}"})
            assert status == 200, reply
        server.stop(signal.SIGTERM)
        time.sleep(1.2)  # revisions 1-3 are now past retention
        server = ServerProcess(*args, env=_RETENTION)
        # Straight to the server: Envoy may still hold its health check's view of the
        # stopped one, and this write must be made once.
        with SarahClient(server.target, timeout=10) as sarah:
            sarah.upsert_state(contact_phone="+6281234567999")
        wait_until(lambda: query(url, "SELECT revision, pruned_through FROM log_head")
                   == [(4, 3)], 20, "the restarted server to prune revisions 1-3")
        answers: list[tuple[int, object]] = []

        def answered() -> bool:  # a read: asked again while Envoy finds no healthy upstream
            status, _, body = envoy.call("GET", "/sarah/watch?since_revision=1")
            answers.append((status, body))
            return status != 503

        wait_until(answered, 20, "Envoy to reach the restarted server")
        status, body = answers[-1]
        assert status == 400, body
        shapes.check_error_body(status, body)
        assert isinstance(body, dict) and body["code"] == 11, body  # google.rpc OUT_OF_RANGE
        assert "list again" in body["message"], body
    finally:
        envoy.stop()
        server.stop(signal.SIGKILL)
