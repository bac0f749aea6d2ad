"""Housekeeping on every replica at once: `make cluster`'s three replicas over one
PostgreSQL behind Envoy, and `--workers 3` over one SQLite file, all purging the same
inactive leads and pruning the same history as they start. Each lead is erased once, with
one deleted event; nothing fails; what is still active or recent stays."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from client import SarahClient
from harness.cluster import Cluster
from harness.postgres import fresh_postgres_database
from harness.processes import start_workers
from harness.waiting import wait_until
from server.core.domain import Patch
from server.core.service import SarahService, now_us
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository
from tests.support.databases import query
from tests.support.helpers import DAY_US, Clock

SILENT = 600  # more than a batch (500): replicas go through several lists of them
ACTIVE = 200
_ENV = {"SARAH_PURGE_INACTIVE_DAYS": "30", "SARAH_HOUSEKEEPING_SECONDS": "0.2"}


def _phone(i: int) -> str:
    return f"+62813{i:07d}"


def _seed(url: str) -> None:
    """A database written by a server whose clock said 100 days ago: SILENT leads with a
    message then and none since; ACTIVE leads with a message then and one yesterday."""
    db = open_database(url, pool_size=2)
    migrate(db)
    store = Repository(db)
    clock = Clock(now_us() - 100 * DAY_US)
    service = SarahService(store, clock=clock)
    try:
        for i in range(SILENT + ACTIVE):  # revisions 1 to 800
            service.upsert_state(Patch(contact_phone=_phone(i), add_messages=1,
                                       request_id=f"old-{i}"))
        clock.now = now_us() - DAY_US
        for i in range(SILENT, SILENT + ACTIVE):  # revisions 801 to 1000
            service.upsert_state(Patch(contact_phone=_phone(i), add_messages=1,
                                       request_id=f"new-{i}"))
    finally:
        store.close()


@pytest.fixture(params=["cluster", "workers"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(database URL, a replica's gRPC target), every replica started over the seeded
    database; their logs are checked once they stop."""
    if request.param == "cluster":
        url = fresh_postgres_database(request.getfixturevalue("postgres_server_url"),
                                      "sarah_housekeeping")
        _seed(url)
        cluster = Cluster(tmp_path, url, env=_ENV)
        try:
            yield url, f"127.0.0.1:{cluster.envoy.port}"
        finally:
            cluster.stop()
        logs = [replica.log for replica in cluster.replicas.values()]
    else:
        url = f"sqlite:///{tmp_path / 'sarah.db'}"
        _seed(url)
        workers = start_workers(3, url, env=_ENV)
        try:
            yield url, workers.target
        finally:
            workers.stop()
        logs = [workers.log]
    for log in logs:
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
        assert "housekeeping postponed" not in log and "pass failed" not in log, log[-3000:]
    erased = [int(line.split("housekeeping erased ")[1].split()[0])
              for log in logs for line in log.splitlines() if "housekeeping erased " in line]
    assert sum(erased) == SILENT, erased  # each lead erased by exactly one replica


def test_every_replica_purging_and_pruning_at_once_erases_each_lead_once(
        replicas: tuple[str, str]) -> None:
    url, target = replicas

    def done() -> bool:
        return (query(url, "SELECT COUNT(*) FROM conversation") == [(ACTIVE,)]
                and query(url, "SELECT pruned_through FROM log_head") == [(SILENT + ACTIVE,)]
                and query(url, "SELECT COUNT(*) FROM upsert_request") == [(0,)])

    wait_until(done, 120, "the replicas to purge the silent leads and prune the history")
    events = query(url, "SELECT kind, COUNT(*), COUNT(DISTINCT contact_phone), MIN(revision), "
                        "MAX(revision) FROM lead_event GROUP BY kind ORDER BY kind")
    total = SILENT + 2 * ACTIVE
    assert events == [
        ("deleted", SILENT, SILENT, total + 1, total + SILENT),  # one each, nothing lost
        ("upserted", ACTIVE, ACTIVE, SILENT + ACTIVE + 1, total),  # yesterday's messages
    ]
    with SarahClient(target, timeout=20) as sarah:
        stats = sarah.get_stats()
        assert (stats.total, stats.revision) == (ACTIVE, total + SILENT)
        assert sarah.get_state(contact_phone=_phone(0)).message_count == 0  # erased
        assert sarah.get_state(contact_phone=_phone(SILENT)).message_count == 2  # kept
