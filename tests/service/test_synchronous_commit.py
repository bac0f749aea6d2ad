"""A write is acknowledged only once the synchronous standby has it. A commit waits for the
standby before anyone sees it; PostgreSQL does not let a statement_timeout end that wait,
but a cancel request does, and then answers success with a WARNING for a commit the standby
may not have, which a failover to it would lose (Patroni's replication modes page;
patroni/patroni#1412). The service answers that UNAVAILABLE, and the caller's retry with
its request_id counts the write once."""

import threading
from collections.abc import Iterator

import grpc
import psycopg
import pytest

from harness.postgres import EmbeddedPostgres, embedded_postgres, fresh_postgres_database
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.storage.database import open_database
from server.storage.migrations import migrate
from tests.support.servers import serving

PHONE = "+6281234567003"


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own: it is made to wait for a standby."""
    with embedded_postgres() as server:
        yield server


def _admin(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run `statements`; the rows of those that return some."""
    rows: list[tuple[object, ...]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            cursor = conn.execute(statement)
            if cursor.description is not None:
                rows.extend(cursor.fetchall())
    return rows


def _standby_required(url: str, required: bool) -> None:
    """Make every commit wait for a synchronous standby that never comes, or stop, which
    releases the commits waiting."""
    names = "'ghost'" if required else "''"
    _admin(url, f"ALTER SYSTEM SET synchronous_standby_names = {names}",
           "SELECT pg_reload_conf()")


def _waiting(url: str) -> list[int]:
    """The backends whose commit waits for the standby."""
    rows = _admin(url, "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
    return [int(str(pid)) for (pid,) in rows]


def test_a_commit_whose_standby_wait_is_cancelled_is_not_reported_saved(
        postgres: EmbeddedPostgres) -> None:
    url = fresh_postgres_database(postgres.url, "sarah_sync")
    migrate(open_database(url, pool_size=1))
    _admin(url, "ALTER ROLE CURRENT_USER SET statement_timeout = '200ms'")
    with serving(url, migrate=False) as server:  # its connections have the role's 200 ms
        _standby_required(url, True)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                sarah = sarah_pb2_grpc.SarahServiceStub(channel)
                write = pb.UpsertStateRequest(contact_phone=PHONE, add_messages=1,
                                              request_id="wamid.1")
                answers: list[grpc.StatusCode] = []

                def call() -> None:
                    try:
                        sarah.UpsertState(write, timeout=30)
                        answers.append(grpc.StatusCode.OK)
                    except grpc.RpcError as err:
                        answers.append(err.code())  # type: ignore[attr-defined]

                caller = threading.Thread(target=call)
                caller.start()
                wait_until(lambda: len(_waiting(url)) == 1, 10, "the commit to wait")
                # Five times the role's statement_timeout: the commit still waits.
                caller.join(timeout=1)
                assert caller.is_alive() and len(_waiting(url)) == 1

                _admin(url, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                            "WHERE wait_event = 'SyncRep'")
                caller.join(timeout=10)
                assert answers == [grpc.StatusCode.UNAVAILABLE]

                _standby_required(url, False)
                # The caller retries with its request_id: the write counted once.
                assert sarah.UpsertState(write, timeout=10).message_count == 1
        finally:
            _standby_required(url, False)
