"""Housekeeping on both databases, with the service's clock set by the test: the change
log's retention a batch at a time, the purge of inactive leads as DeleteState erases them,
and two servers over one database running both at once."""

import logging
from collections.abc import Iterator

import grpc
import pytest

from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.core.domain import LeadFilter, Patch
from server.core.housekeeping import Housekeeping, Swept
from server.core.service import SarahService, now_us
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository
from tests.support.databases import query
from tests.support.helpers import DAY_US, Clock, get, upsert
from tests.support.servers import serving

_EVERY = 0.05  # seconds between housekeeping passes


def _phone(i: int) -> str:
    return f"+62812{i:07d}"


@pytest.fixture
def clock() -> Clock:
    return Clock(now_us())


@pytest.fixture
def service(database_url: str, clock: Clock) -> Iterator[SarahService]:
    db = open_database(database_url, pool_size=2)
    migrate(db)
    store = Repository(db)
    yield SarahService(store, clock=clock, history_days=1)
    store.close()


def _log_head(url: str) -> tuple[int, int]:
    (head,) = query(url, "SELECT revision, pruned_through FROM log_head")
    return int(head[0]), int(head[1])


def _revisions(url: str) -> list[int]:
    return [int(r) for (r,) in query(url, "SELECT revision FROM lead_event ORDER BY 1")]


def test_events_past_the_history_go_a_batch_at_a_time_and_newer_ones_stay(
        service: SarahService, clock: Clock, database_url: str) -> None:
    for i in range(5):
        service.upsert_state(Patch(contact_phone=_phone(i)))
    clock.now += DAY_US + 1
    service.upsert_state(Patch(contact_phone=_phone(5)))  # revision 6, within the history
    through = service.history_end()
    assert through == 5
    removed = []
    for _ in range(4):
        removed.append(service.prune_history(through, limit=2))
        removed.append(_log_head(database_url)[1])  # pruned_through after each batch
    assert removed == [2, 2, 2, 4, 1, 5, 0, 5]
    assert _revisions(database_url) == [6]
    assert _log_head(database_url) == (6, 5)
    assert Housekeeping(service, batch=2).sweep() == Swept()


def test_a_sweep_drains_a_backlog_larger_than_its_batch(
        service: SarahService, clock: Clock, database_url: str) -> None:
    for i in range(7):
        service.upsert_state(Patch(contact_phone=_phone(i)))
    clock.now += DAY_US + 1
    assert Housekeeping(service, batch=3).sweep() == Swept(events=7)
    assert _revisions(database_url) == [] and _log_head(database_url) == (7, 7)


def test_a_watcher_resuming_below_the_retained_history_gets_out_of_range(
        database_url: str, clock: Clock) -> None:
    with serving(database_url, clock=clock, history_days=1, housekeeping_seconds=_EVERY
                 ) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        for i in range(4):
            upsert(stub, contact_phone=_phone(i))
        clock.now += DAY_US // 2
        upsert(stub, contact_phone=_phone(4))  # revision 5: half a day younger
        clock.now += DAY_US // 2 + 1
        wait_until(lambda: _log_head(database_url) == (5, 4), 20, "revisions 1-4 to go")
        assert _revisions(database_url) == [5]
        with pytest.raises(grpc.RpcError) as err:
            next(stub.WatchLeads(pb.WatchLeadsRequest(since_revision=3), timeout=10))
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
        stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=4), timeout=30)
        assert next(stream).revision == 5
        stream.cancel()
        # The leads themselves stay: retention removes history, not conversations.
        assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 5


def test_activity_still_counts_the_days_whose_events_retention_removed(
        database_url: str, clock: Clock) -> None:
    with serving(database_url, clock=clock, history_days=1, housekeeping_seconds=_EVERY
                 ) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        upsert(stub, contact_phone=_phone(0), message_count=3)
        upsert(stub, contact_phone=_phone(0), add_messages=2, state=pb.handoff)
        upsert(stub, contact_phone=_phone(1), lead_temperature=pb.hot, state=pb.completed)

        def by_day(days: int) -> dict[str, tuple[int, ...]]:
            reply = stub.GetActivity(pb.GetActivityRequest(days=days), timeout=10)
            return {d.date: (d.new_leads, d.messages, d.reached_handoff, d.reached_completed,
                             d.became_hot) for d in reply.days}

        before = by_day(3)
        assert sorted(before.values())[-1] == (2, 5, 1, 1, 1)  # today's
        clock.now += 3 * DAY_US  # three days later, past the one-day history
        wait_until(lambda: _revisions(database_url) == [], 20, "the history to be pruned")
        after = by_day(6)
        assert {date: after[date] for date in before} == before
        assert sum(count for day in after.values() for count in day) == 10  # and no more
def test_the_purge_erases_only_leads_silent_that_long_each_as_delete_state_does(
        database_url: str, clock: Clock) -> None:
    with serving(database_url, clock=clock, purge_inactive_days=30,
                 housekeeping_seconds=_EVERY) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        silent = upsert(stub, contact_phone=_phone(1), add_messages=2)
        upsert(stub, contact_phone=_phone(2), add_messages=1)  # messages again later
        never = upsert(stub, business_scoped_user_id="ID.never")  # never had a message
        edited = upsert(stub, contact_phone=_phone(4), add_messages=1)  # edited, no message
        clock.now += 29 * DAY_US
        upsert(stub, contact_phone=_phone(2), add_messages=1)
        upsert(stub, contact_phone=_phone(4), state=pb.handoff)  # an edit is not a message
        before = stub.ListLeads(pb.ListLeadsRequest(), timeout=10)
        assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 4
        clock.now += DAY_US + 1  # 30 days and more since the first three were created
        upsert(stub, contact_phone=_phone(5))  # new today, no message: it stays

        def erased() -> bool:
            return stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 2

        wait_until(erased, 20, "the three silent leads to be purged")
        listed = stub.ListLeads(pb.ListLeadsRequest(), timeout=10)
        assert sorted(lead.contact_phone for lead in listed.leads) == [_phone(2), _phone(5)]
        assert get(stub, _phone(1)).message_count == 0  # the default: nothing stored
        stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
        assert (stats.total, stats.by_state.handoff) == (2, 0)
        # Each purged lead leaves exactly its deleted event, as DeleteState does.
        stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=before.revision),
                                 timeout=30)
        events = [next(stream) for _ in range(4)]
        stream.cancel()
        assert sorted((e.kind, e.conversation.contact_phone,
                       e.conversation.business_scoped_user_id) for e in events) == sorted([
            (pb.upserted, _phone(5), ""),  # the new lead's (before or after the purge)
            (pb.deleted, silent.contact_phone, ""),
            (pb.deleted, "", never.business_scoped_user_id),
            (pb.deleted, edited.contact_phone, "")])
        kept = query(database_url, "SELECT kind, contact_phone, business_scoped_user_id "
                                   "FROM lead_event WHERE kind = 'deleted' OR contact_phone IN "
                                   f"('{_phone(1)}', '{_phone(4)}') OR "
                                   "business_scoped_user_id = 'ID.never'")
        assert sorted(kept) == sorted([("deleted", _phone(1), ""), ("deleted", "", "ID.never"),
                                       ("deleted", _phone(4), "")])


def test_without_the_purge_setting_no_lead_is_erased(database_url: str, clock: Clock) -> None:
    with serving(database_url, clock=clock, history_days=1, housekeeping_seconds=_EVERY
                 ) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        for i in range(3):
            upsert(stub, contact_phone=_phone(i), add_messages=1)
        clock.now += 3650 * DAY_US
        # The history's retention shows a pass has run since; the leads are all there.
        wait_until(lambda: _log_head(database_url) == (3, 3), 20, "a housekeeping pass")
        assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 3
        assert len(stub.ListLeads(pb.ListLeadsRequest(), timeout=10).leads) == 3


def test_two_replicas_purging_and_pruning_one_database_at_once_agree(
        database_url: str, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    # Two services with their own stores, connections and transactions over one
    # database, as replicas are (peewee's models are bound once per process, so one
    # database object serves both; tests/e2e/test_cluster_housekeeping.py runs processes).
    leads = 120
    db = open_database(database_url, pool_size=8)
    migrate(db)
    replicas = [SarahService(Repository(db), clock=clock, history_days=40,
                             purge_inactive_days=30) for _ in range(2)]
    for i in range(leads):
        replicas[0].upsert_state(Patch(contact_phone=_phone(i), add_messages=1))
        replicas[1].upsert_state(Patch(contact_phone=_phone(i), lead_score=i % 100))
    caplog.set_level(logging.INFO, logger="server.core.housekeeping")
    running = [Housekeeping(replica, interval=_EVERY, batch=50) for replica in replicas]
    try:
        for housekeeping in running:
            housekeeping.start()
        clock.now += 31 * DAY_US  # every lead is silent: both purge them at once
        wait_until(lambda: replicas[1].get_stats(LeadFilter()).total == 0, 60,
                   "every lead to be purged")
        kinds = query(database_url, "SELECT kind, COUNT(*), COUNT(DISTINCT contact_phone) "
                                    "FROM lead_event GROUP BY kind")
        assert kinds == [("deleted", leads, leads)]  # one deleted event each, nothing else
        clock.now += 41 * DAY_US  # and now both prune those deleted events at once
        wait_until(lambda: _revisions(database_url) == [], 60, "the history to be pruned")
        assert _log_head(database_url) == (3 * leads, 3 * leads)
    finally:
        for housekeeping in running:
            housekeeping.stop()
        db.close_all()
    erased = sum(int(r.getMessage().split()[2]) for r in caplog.records
                 if r.getMessage().startswith("housekeeping erased"))
    assert erased == leads  # each lead erased by one of the two
    assert [r.getMessage() for r in caplog.records
            if r.name == "server.core.housekeeping" and r.levelno >= logging.WARNING] == []
