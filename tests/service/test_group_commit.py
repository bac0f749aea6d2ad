"""Group commit on both databases: the writes queued while the writer is busy commit as one
group, in arrival order; a failing write fails alone; the change log and the commit
listeners see exactly the writes that committed, once each, in order; and on PostgreSQL a
group that loses a deadlock to another replica's group has its writes run again alone,
none of them failed for it.

A Gate (a write that holds the writer until it is opened) makes the groups: the writes
queued behind it, one by one, are the next group."""

import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import grpc
import peewee
import pytest

from harness.waiting import wait_until
from server.core import rules
from server.core.activity import ActivityDeltas
from server.core.changes import Event, changes_of
from server.core.counts import CountDeltas
from server.core.domain import LeadFilter, Patch
from server.core.errors import EtagMismatch
from server.core.service import SarahService, now_us
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository, WriteTx
from tests.support.databases import empty_tables, query
from tests.support.helpers import get, upsert
from tests.support.servers import serving

PHONES = ["+6281234567801", "+6281234567802", "+6281234567803", "+6281234567804"]


class Replica:
    """A store and its service over one database, as a replica has them, with what the
    store's commit listener heard."""

    def __init__(self, url: str):
        self.db = open_database(url)
        migrate(self.db)
        self.store = Repository(self.db)
        self.service = SarahService(self.store)
        self.heard: list[list[Event]] = []
        self.store.on_commit(lambda events: self.heard.append(list(events)))
        self._pool = ThreadPoolExecutor(max_workers=32)

    def queue(self, calls: list[Callable[[], Any]]) -> list["Future[Any]"]:
        """Start `calls` one at a time, each once the one before waits for the writer."""
        futures = []
        for call in calls:
            before = self.store.queued_writes()
            futures.append(self._pool.submit(call))
            wait_until(lambda n=before: self.store.queued_writes() > n, 30, "a write to queue",
                       interval=0.005)
        return futures

    def close(self) -> None:
        self._pool.shutdown()
        self.store.close()


@pytest.fixture
def replica(database_url: str) -> Iterator[Replica]:
    opened = Replica(database_url)
    yield opened
    opened.close()


class Gate:
    """A write that holds the writer of `store` until opened: entered as a block, it is
    the writer's current group; passed to Replica.queue as `gate.write`, a member of one."""

    def __init__(self, store: Repository):
        self._store = store
        self.reached = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self.write)

    def write(self) -> None:
        self._store.write(self._hold)

    def _hold(self, tx: WriteTx) -> None:
        self.reached.set()
        assert self._opened.wait(60)

    def __enter__(self) -> "Gate":
        self._thread.start()
        assert self.reached.wait(30), "the gate never reached the writer"
        return self

    def open(self) -> None:
        self._opened.set()

    def __exit__(self, *_exc: object) -> None:
        self.open()
        self._thread.join()


def _logs_then_fails(phone: str, tx: WriteTx) -> None:
    """A write that stores a lead and logs its event, then fails: what it wrote goes."""
    now = now_us()
    lead = rules.apply_patch(rules.validate_patch(Patch(contact_phone=phone), "ID"), None, now)
    tx.lock_keys([lead.key])
    tx.lock_holders(lead.key)
    tx.insert_lead(lead)
    counts, activity = CountDeltas(), ActivityDeltas()
    counts.change(None, lead)
    activity.change(None, lead, now)
    tx.add_counts(counts)
    tx.add_activity(activity)
    tx.append_events(changes_of([(None, lead)]), now)
    raise RuntimeError("failed after logging its event")


def test_a_write_commits_as_durably_as_before(replica: Replica) -> None:
    """Issue 25 made writes cheaper without relaxing durability: the transaction a write
    runs in is on a connection in WAL with synchronous=NORMAL (SQLite), or with
    synchronous_commit on (PostgreSQL)."""
    db = replica.db

    def settings(_tx: WriteTx) -> tuple[str, ...]:
        if isinstance(db, peewee.SqliteDatabase):
            journal = db.execute_sql("PRAGMA journal_mode").fetchone()[0]
            level = db.execute_sql("PRAGMA synchronous").fetchone()[0]
            return str(journal), {1: "normal"}.get(level, f"level {level}")
        return (str(db.execute_sql("SHOW synchronous_commit").fetchone()[0]),)

    expected = ("wal", "normal") if isinstance(db, peewee.SqliteDatabase) else ("on",)
    assert replica.store.write(settings) == expected


def test_a_failing_write_fails_alone_and_its_group_commits(replica: Replica) -> None:
    service = replica.service
    stored = service.upsert_state(Patch(contact_phone=PHONES[1], lead_score=5))
    replica.heard.clear()
    with Gate(replica.store):
        calls = replica.queue([
            lambda: service.upsert_state(Patch(contact_phone=PHONES[0], add_messages=1)),
            lambda: service.upsert_state(Patch(contact_phone=PHONES[1], lead_score=9,
                                               etag="not-the-etag")),
            lambda: replica.store.write(functools.partial(_logs_then_fails, PHONES[3])),
            lambda: service.upsert_state(Patch(contact_phone=PHONES[2], lead_score=7)),
        ])
    first, last = calls[0].result(), calls[3].result()
    with pytest.raises(EtagMismatch):
        calls[1].result()
    with pytest.raises(RuntimeError):
        calls[2].result()

    # One group: the listener heard it once, the two writes that committed, in order, and
    # the failed write's revision went to the next write (no gap).
    assert len(replica.heard) == 1
    events = replica.heard[0]
    assert [e.lead.contact_phone for e in events if e.lead] == [PHONES[0], PHONES[2]]
    assert [e.lead.etag for e in events if e.lead] == [first.etag, last.etag]
    assert events[1].revision == events[0].revision + 1
    logged = replica.store.events_after(0, 100)
    assert [e.revision for e in logged[-2:]] == [e.revision for e in events]
    assert replica.store.log_head()[0] == events[1].revision

    assert service.get_state(PHONES[1], "") == stored
    assert service.get_state(PHONES[3], "").created_at is None  # unsaved default
    # Neither the counts nor the activity count the failed writes.
    assert service.get_stats(LeadFilter()).total == 3
    assert replica.store.count() == 3
    days, _zone = service.get_activity(None, "UTC", 1)
    assert days[-1].new_leads == 3


def test_sixteen_writers_of_one_lead_commit_in_arrival_order(replica: Replica) -> None:
    service = replica.service
    with Gate(replica.store):
        calls = replica.queue([
            functools.partial(service.upsert_state,
                              Patch(contact_phone=PHONES[0], lead_score=i, add_messages=1))
            for i in range(16)])
    answers = [call.result() for call in calls]

    # Each write saw the one queued before it: nothing lost, nothing reordered.
    assert [(a.lead_score, a.message_count) for a in answers] == [(i, i + 1) for i in range(16)]
    assert len(replica.heard) == 1
    events = replica.heard[0]
    assert [e.lead for e in events] == answers
    first = events[0].revision
    assert [e.revision for e in events] == list(range(first, first + 16))
    logged = replica.store.events_after(first - 1, 100)
    assert [(e.revision, e.lead.etag if e.lead else "") for e in logged] == [
        (e.revision, a.etag) for e, a in zip(events, answers, strict=True)]
    assert service.get_state(PHONES[0], "") == answers[-1]


def test_writes_of_successive_groups_reach_the_listener_once_each_in_order(
        replica: Replica) -> None:
    service = replica.service
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(
            lambda i: service.upsert_state(Patch(contact_phone=PHONES[i % 4], add_messages=1)),
            range(200)))
    heard = [e for group in replica.heard for e in group]
    assert [e.revision for e in heard] == list(range(1, 201))
    assert sorted(e.lead.etag for e in heard if e.lead) == sorted(a.etag for a in answers)
    assert [e.revision for e in replica.store.events_after(0, 500)] == list(range(1, 201))
    assert sum(service.get_state(p, "").message_count for p in PHONES) == 200


@pytest.mark.parametrize("group_commit", [True, False], ids=["grouped", "alone"])
def test_sixteen_etag_guarded_increments_lose_none(database_url: str, group_commit: bool
                                                   ) -> None:
    """Read, add one, write back under the etag read; on ABORTED read again. Whichever
    way the writes are committed, every increment lands once."""
    from sarah.v1 import sarah_pb2_grpc

    rounds = 5
    with serving(database_url, group_commit=group_commit) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        upsert(stub, contact_phone=PHONES[0], message_count=0)

        def increments(_i: int) -> None:
            for _ in range(rounds):
                while True:
                    lead = get(stub, PHONES[0])
                    try:
                        upsert(stub, contact_phone=PHONES[0], etag=lead.etag,
                               message_count=lead.message_count + 1)
                        break
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.ABORTED, exc

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(increments, range(16)))
        assert get(stub, PHONES[0]).message_count == 16 * rounds


def _waiting_locks(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM pg_locks WHERE NOT granted")[0][0])


def _deadlocks(url: str) -> int:
    return int(query(url, "SELECT deadlocks FROM pg_stat_database "
                          "WHERE datname = current_database()")[0][0])


def test_a_group_that_loses_a_deadlock_runs_its_writes_again_alone(postgres_url: str) -> None:
    """Two replicas' groups lock two leads' keys in opposite orders: PostgreSQL aborts one
    group's transaction, and every write of both groups still succeeds, once."""
    empty_tables(postgres_url)
    deadlocks = _deadlocks(postgres_url)
    one, two = Replica(postgres_url), Replica(postgres_url)
    a, b = PHONES[0], PHONES[1]

    def add(replica: Replica, phone: str) -> Callable[[], Any]:
        return lambda: replica.service.upsert_state(Patch(contact_phone=phone, add_messages=1))

    try:
        holding_a = Gate(one.store)
        with Gate(one.store):
            # Replica one's next group: a (its key held from here), the gate, then b.
            calls = one.queue([add(one, a), holding_a.write, add(one, b)])
        assert holding_a.reached.wait(30)
        with Gate(two.store):
            # Replica two's next group: b, its key held from here, waits for a row that
            # replica one's group holds (a count, the log's head) until its commit.
            calls += two.queue([add(two, b), add(two, a)])
        wait_until(lambda: _waiting_locks(postgres_url) >= 1, 30,
                   "replica two to wait for replica one")
        holding_a.open()  # replica one goes on to b's key: a cycle
        answers = [call.result(timeout=60) for call in calls]
        assert all(answer is not None for answer in [answers[0], *answers[2:]])
        wait_until(lambda: _deadlocks(postgres_url) > deadlocks, 30,
                   "PostgreSQL to count the deadlock")

        assert one.service.get_state(a, "").message_count == 2
        assert one.service.get_state(b, "").message_count == 2
        logged = one.store.events_after(0, 100)
        assert [e.revision for e in logged] == [1, 2, 3, 4]
        assert one.service.get_stats(LeadFilter()).total == 2
    finally:
        one.close()
        two.close()
