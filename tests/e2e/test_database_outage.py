"""A PostgreSQL outage under a running server that reaches it through a multi-host URL (a
first host that never answers, then the real one, target_session_attrs=read-write), as it
would reach a Patroni cluster: calls during the outage fail at once with UNAVAILABLE and
retry advice, never INTERNAL; health is NOT_SERVING until the database answers again; the
watch stream goes on without a gap, the LISTEN loop and housekeeping come back by
themselves, and a write retried with its request_id counts once. tests/ha runs the same
through a real failover (make ha-test)."""

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.postgres import EmbeddedPostgres, embedded_postgres, fresh_postgres_database
from harness.processes import ServerProcess
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.watcher import RevisionWatcher

PHONE = "+6281234567002"


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own: stopping the session's would fail others."""
    with embedded_postgres() as server:
        yield server


def _multi_host(url: str, tmp_path: Path) -> str:
    """`url` (a Unix-socket URL, ?host=DIR) with a host before it where nothing listens."""
    nowhere = tmp_path / "no-server-here"
    nowhere.mkdir()
    base, _, socket_dir = url.partition("?host=")
    return f"{base}?host={nowhere},{socket_dir}&target_session_attrs=read-write"


def _health(stub: health_pb2_grpc.HealthStub) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status


def _listeners(url: str) -> int:
    """Sessions of the database whose last statement was the commit listener's LISTEN."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                           "current_database() AND query LIKE 'LISTEN sarah_log%'").fetchone()
        return int(row[0]) if row else 0


def test_an_outage_is_unavailable_at_once_and_everything_resumes_after_it(
        postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    url = fresh_postgres_database(postgres.url, "sarah_outage")
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url", _multi_host(url, tmp_path),
                           "--health-check-seconds", "0.5", "--housekeeping-seconds", "0.5")
    watcher = RevisionWatcher(server.target)
    channel = grpc.insecure_channel(server.target)
    try:
        sarah = sarah_pb2_grpc.SarahServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        def write(request_id: str) -> pb.Conversation:
            return sarah.UpsertState(pb.UpsertStateRequest(
                contact_phone=PHONE, add_messages=1, request_id=request_id), timeout=10)

        for n in range(1, 4):
            assert write(f"before-{n}").message_count == n
        wait_until(lambda: _listeners(url) == 1, 30, "the commit listener to listen")

        postgres.stop()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            write("during")  # its outcome unknown to the caller: it retries it below
        failed: grpc.Call = refused.value  # type: ignore[assignment]
        assert failed.code() == grpc.StatusCode.UNAVAILABLE, failed.details()
        assert time.monotonic() - started < 3, "the call waited instead of failing"
        assert dict(failed.trailing_metadata() or ())["retry-after"] == "1"
        wait_until(lambda: _health(health) == health_pb2.HealthCheckResponse.NOT_SERVING, 30,
                   "health to be NOT_SERVING")

        postgres.start()
        wait_until(lambda: _health(health) == health_pb2.HealthCheckResponse.SERVING, 30,
                   "health to be SERVING", interval=0.2)
        # The first call after the outage is served: the pool dropped the broken
        # connections instead of handing them out.
        assert write("during").message_count == 4
        assert write("during").message_count == 4  # a retry: the stored result, once
        assert write("after").message_count == 5
        wait_until(lambda: _listeners(url) == 1, 30, "the commit listener to listen again")
        wait_until(lambda: watcher.reached(5), 30, "the watcher to receive revision 5")
        assert watcher.problems(5) == []
        assert watcher.streams == 1, "the watch stream ended with the database"
        wait_until(lambda: "housekeeping resumed" in server.log, 30, "housekeeping to resume")
    finally:
        watcher.stop()
        channel.close()
        log = server.stop()
    for said in ("listening for commits again", "reading the change log again",
                 "health is NOT_SERVING", "health is SERVING"):
        assert said in log, said
    # Each failure said once, as a line (no traceback, no bug): not once a poll.
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
    assert log.count("reading the change log failed") == 1, log[-3000:]
