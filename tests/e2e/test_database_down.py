"""Health follows the database: with PostgreSQL stopped under a running cluster, every
replica (and every worker of a --workers server) reports NOT_SERVING and Envoy takes them
out of its pool, answering at once instead of waiting on servers that can only fail; with
PostgreSQL back, they report SERVING and calls succeed again."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import SarahClient
from harness.envoy import EnvoyProcess
from harness.ports import free_port
from harness.postgres import EmbeddedPostgres, embedded_postgres, fresh_postgres_database
from harness.processes import ServerProcess, start_workers
from harness.waiting import wait_until

PHONE = "+6281234567001"
# Checked often so the test does not wait long; the default is 5 s.
CHECK = ("--health-check-seconds", "0.5")


def _status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=10)
        return reply.status


def _all_report(ports: list[int], status: int, what: str) -> None:
    wait_until(lambda: all(_status(port) == status for port in ports), 60,
               f"every server to report {what}", interval=0.2)


def _no_healthy_upstream(envoy: EnvoyProcess) -> bool:
    code, headers, body = envoy.call("GET", f"/sarah/state?contact_phone={PHONE}")
    assert code == 503 and isinstance(body, dict) and body["code"] == 14, body
    assert headers["retry-after"] == "1", headers  # from the server, or from Envoy
    return "no healthy upstream" in str(body["message"])


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own: stopping the session's would fail others."""
    with embedded_postgres() as server:
        yield server


def test_health_follows_the_database_and_envoy_moves_traffic(
        postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    url = fresh_postgres_database(postgres.url, "sarah_down")
    replica_port = free_port()
    replica = ServerProcess("--listen", f"127.0.0.1:{replica_port}", "--database-url", url,
                            *CHECK)
    workers = start_workers(2, url, *CHECK)
    ports = [replica_port, *workers.ports]
    envoy = EnvoyProcess(ports, tmp_path)
    try:
        envoy.wait_healthy(3)
        with SarahClient(f"127.0.0.1:{envoy.port}", timeout=20) as sarah:
            sarah.upsert_state(contact_phone=PHONE, add_messages=1, request_id="before")

        postgres.stop()
        _all_report(ports, health_pb2.HealthCheckResponse.NOT_SERVING, "NOT_SERVING")
        envoy.wait_healthy(0)
        # No server is left that could serve: Envoy says so itself, at once, instead of
        # sending calls to servers that would fail (once its workers have the news).
        wait_until(lambda: _no_healthy_upstream(envoy), 30, "Envoy to stop sending calls",
                   interval=0.2)

        postgres.start()
        _all_report(ports, health_pb2.HealthCheckResponse.SERVING, "SERVING")
        envoy.wait_healthy(3)
        with SarahClient(f"127.0.0.1:{envoy.port}", timeout=20) as sarah:
            lead = sarah.upsert_state(contact_phone=PHONE, add_messages=1, request_id="after")
            assert lead.message_count == 2
            # Every server reaches the database again, not only the one Envoy picked.
            for port in ports:
                with SarahClient(f"127.0.0.1:{port}", timeout=20) as direct:
                    assert direct.get_state(contact_phone=PHONE).message_count == 2
    finally:
        envoy.stop()
        logs = replica.stop() + workers.stop()
    assert logs.count("health is NOT_SERVING") == 3, logs[-3000:]
    assert logs.count("health is SERVING") == 3
