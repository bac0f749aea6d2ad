"""One contract for core's Store (server/core/ports.py), held by all three: the in-memory
store the unit tests use, and the repository on SQLite and on PostgreSQL. What a unit test
learns over the memory store is then true of the database too."""

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pytest

from server.core import identity
from server.core.activity import ActivityDeltas, ActivityRow
from server.core.changes import DELETED, UPSERTED, Change, Event, changes_of, keys_only
from server.core.counts import CountDeltas, CountRow
from server.core.domain import Lead, LeadFilter, LeadKey, Patch
from server.core.errors import Unavailable
from server.core.identity import Holders
from server.core.ports import Store, WriteTx
from server.core.service import REQUEST_ID_TTL_US, SarahService
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository
from tests.support.databases import empty_tables
from tests.support.helpers import Clock
from tests.support.memory_store import MemoryStore

PHONE = "+6281234567890"
OTHER_PHONE = "+6281298765432"
BSUID = "ID.1648738043044942"
T = 1_000_000_000_000  # a moment, in microseconds


class _Full(Store, Protocol):
    """What the contract asks beside the Store: the change log as delivery reads it, and
    the commit listener."""

    def log_head(self) -> tuple[int, int]: ...
    def events_after(self, revision: int, limit: int) -> list[Event]: ...
    def on_commit(self, listener: Callable[[list[Event]], None]) -> None: ...


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Full]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sarah.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        empty_tables(url)
    db = open_database(url, pool_size=4)
    migrate(db)
    store = Repository(db)
    yield store
    store.close()


def _lead(phone: str = PHONE, bsuid: str = "", workspace: str = "", at: int = T,
          **fields: Any) -> Lead:
    return Lead(workspace_id=workspace, contact_phone=phone, business_scoped_user_id=bsuid,
                created_at=at, updated_at=at, last_message_at=at, etag=f"e{at}", **fields)


def _create(store: Store, *leads: Lead, at: int = T) -> list[Event]:
    """Insert `leads` as a write does: counted, logged."""
    def work(tx: WriteTx) -> list[Event]:
        deltas = CountDeltas()
        for lead in leads:
            tx.insert_lead(lead)
            deltas.change(None, lead)
        tx.add_counts(deltas)
        return tx.append_events(changes_of((None, lead) for lead in leads), at)
    return store.write(work)


def _update(store: Store, was: Lead, lead: Lead, at: int = T) -> list[Event]:
    def work(tx: WriteTx) -> list[Event]:
        tx.lock_holders(was.key)
        tx.update_lead(lead, was=was)
        deltas = CountDeltas()
        deltas.change(was, lead)
        tx.add_counts(deltas)
        return tx.append_events(changes_of([(was, lead)]), at)
    return store.write(work)


def _history(store: Store, key: LeadKey, before: int | None = None,
             limit: int = 100) -> list[Event]:
    return store.history(key, identity.meant, before, limit)


def _stats(store: Store, workspace_id: str | None = None) -> list[CountRow]:
    rows, _ = store.counts(workspace_id)
    return sorted(row for row in rows if row.n or row.score_sum)


# Leads, keys and units of work

def test_an_empty_store_holds_nothing(store: _Full) -> None:
    assert store.holders(LeadKey("", PHONE, BSUID)) == Holders()
    assert store.page(LeadFilter(), "lead_score", None, 10) == ([], 0)
    assert store.counts(None) == ([], 0) and store.log_head() == (0, 0)
    assert _history(store, LeadKey("", PHONE)) == [] and store.events_after(0, 10) == []
    assert store.newest_past(T) is None and store.inactive(T, 10) == []


def test_a_lead_is_found_by_either_key_in_its_workspace_only(store: _Full) -> None:
    lead = _lead(bsuid=BSUID, workspace="toko", lead_score=7, pain_points=("a", "é"))
    _create(store, lead)
    both = Holders(by_bsuid=lead, by_phone=lead)
    assert store.holders(LeadKey("toko", PHONE, BSUID)) == both
    assert store.holders(LeadKey("toko", PHONE)) == Holders(by_phone=lead)
    assert store.holders(LeadKey("toko", "", BSUID)) == Holders(by_bsuid=lead)
    assert store.holders(LeadKey("", PHONE, BSUID)) == Holders()


def test_a_write_returns_what_its_work_returned(store: _Full) -> None:
    assert store.write(lambda tx: tx.lock_holders(LeadKey("", PHONE))) == Holders()
    assert store.write(lambda tx: 42) == 42


def test_a_failing_unit_of_work_writes_nothing(store: _Full) -> None:
    def fails(tx: WriteTx) -> None:
        lead = _lead()
        tx.insert_lead(lead)
        deltas = CountDeltas()
        deltas.change(None, lead)
        tx.add_counts(deltas)
        tx.save_request("r1", T, lead)
        tx.append_events(changes_of([(None, lead)]), T)
        raise ValueError("the rule said no")

    with pytest.raises(ValueError, match="the rule said no"):
        store.write(fails)
    assert store.holders(LeadKey("", PHONE)) == Holders()
    assert store.counts(None) == ([], 0) and store.log_head() == (0, 0)
    assert store.write(lambda tx: tx.find_request(LeadKey("", PHONE), "r1", 0)) is None


def test_a_key_another_lead_holds_is_refused_and_nothing_is_written(store: _Full) -> None:
    _create(store, _lead(bsuid=BSUID))
    with pytest.raises(Unavailable):
        _create(store, _lead(phone=OTHER_PHONE), _lead(bsuid=BSUID, phone=""))
    assert store.holders(LeadKey("", OTHER_PHONE)) == Holders()
    assert store.log_head() == (1, 0)


def test_an_update_moves_the_lead_to_its_new_keys(store: _Full) -> None:
    old = _lead()
    _create(store, old)
    new = replace(old, contact_phone=OTHER_PHONE, business_scoped_user_id=BSUID, lead_score=9)
    _update(store, old, new)
    assert store.holders(LeadKey("", PHONE)) == Holders()
    assert store.holders(LeadKey("", OTHER_PHONE, BSUID)) == Holders(new, new)


def test_lock_leads_finds_a_batch_by_either_key(store: _Full) -> None:
    a, b = _lead(), _lead(phone="", bsuid=BSUID)
    store.write(lambda tx: tx.insert_leads([a, b]))
    keys = [LeadKey("", PHONE), LeadKey("", "", BSUID), LeadKey("", "+6281200000000")]
    found = store.write(lambda tx: tx.lock_leads(keys))
    assert sorted(found, key=lambda lead: lead.contact_phone) == [b, a]


def test_a_deleted_lead_is_gone_and_uncounted(store: _Full) -> None:
    lead = _lead(lead_score=40, lead_temperature="hot")
    _create(store, lead)
    assert _stats(store) == [CountRow("hot", "greeting", 1, 40)]

    def delete(tx: WriteTx) -> None:
        tx.lock_holders(lead.key)
        tx.delete_lead(lead)
        deltas = CountDeltas()
        deltas.change(lead, None)
        tx.add_counts(deltas)

    store.write(delete)
    assert store.holders(lead.key) == Holders() and _stats(store) == []


# Counts and activity

def test_counts_are_per_workspace_and_summed_over_all(store: _Full) -> None:
    _create(store, _lead(lead_score=10), _lead(phone=OTHER_PHONE, lead_score=30),
            _lead(workspace="toko", lead_score=5, state="handoff"))
    assert _stats(store, "") == [CountRow("cold", "greeting", 2, 40)]
    assert _stats(store, "toko") == [CountRow("cold", "handoff", 1, 5)]
    assert _stats(store) == [CountRow("cold", "greeting", 2, 40),
                             CountRow("cold", "handoff", 1, 5)]
    assert store.counts(None)[1] == store.log_head()[0] == 3


def test_activity_is_summed_per_range_of_quarter_hours(store: _Full) -> None:
    def active(tx: WriteTx) -> None:
        deltas = ActivityDeltas()
        for workspace, at in (("", 0), ("", 900 * 10**6), ("toko", 2 * 900 * 10**6)):
            deltas.change(None, _lead(workspace=workspace, message_count=2), at)
        tx.add_activity(deltas)

    store.write(active)
    assert store.activity(None, [0, 2, 5, 9]) == [
        ActivityRow(0, 2, 4, 0, 0, 0), ActivityRow(2, 1, 2, 0, 0, 0), ActivityRow(5, 0, 0, 0, 0, 0)]
    assert store.activity("", [0, 1, 3]) == [ActivityRow(0, 1, 2, 0, 0, 0),
                                             ActivityRow(1, 1, 2, 0, 0, 0)]


# Pages

def test_a_page_is_filtered_ordered_and_continues_after_a_position(store: _Full) -> None:
    leads = [_lead(phone=f"+62812345678{i:02d}", lead_score=score, workspace=ws,
                   lead_temperature=temp)
             for i, (score, ws, temp) in enumerate([(50, "", "hot"), (50, "", "cold"),
                                                    (70, "", "hot"), (10, "toko", "hot")])]
    _create(store, *leads)
    page, revision = store.page(LeadFilter(), "lead_score", None, 3)
    assert page == [leads[2], leads[1], leads[0]] and revision == 4
    last = page[1]
    after = (last.lead_score, last.contact_phone, last.business_scoped_user_id,
             last.workspace_id)
    assert store.page(LeadFilter(), "lead_score", after, 10)[0] == [leads[0], leads[3]]
    assert store.page(LeadFilter(workspace_id="", temperature="hot", min_score=60),
                      "lead_score", None, 10)[0] == [leads[2]]


# The change log

def test_events_take_consecutive_revisions_and_are_read_in_order(store: _Full) -> None:
    heard: list[list[Event]] = []
    store.on_commit(heard.append)
    first = _create(store, _lead(), _lead(phone=OTHER_PHONE), at=T)
    assert [e.revision for e in first] == [1, 2] and store.log_head() == (2, 0)
    assert store.write(lambda tx: tx.append_events([], T)) == []
    [third] = _update(store, _lead(), _lead(lead_score=5), at=T + 1)
    assert (third.revision, third.kind, third.changed, third.at) == (
        3, UPSERTED, ("lead_score",), T + 1)
    assert store.events_after(0, 10) == [*first, third]
    assert store.events_after(1, 1) == [first[1]]
    assert heard == [first, [third]]


def test_a_lead_history_is_newest_first_and_pages_by_revision(store: _Full) -> None:
    lead = _lead()
    _create(store, lead, _lead(phone=OTHER_PHONE))
    for score in (1, 2, 3):
        new = replace(lead, lead_score=score)
        _update(store, lead, new)
        lead = new
    history = _history(store, LeadKey("", PHONE))
    assert [e.revision for e in history] == [5, 4, 3, 1]
    assert _history(store, LeadKey("", PHONE), before=4, limit=1) == [history[2]]


def test_history_follows_the_row_across_a_key_change(store: _Full) -> None:
    old = _lead()
    _create(store, old)
    _update(store, old, replace(old, contact_phone=OTHER_PHONE))
    assert [e.revision for e in _history(store, LeadKey("", OTHER_PHONE))] == [2, 1]
    # The old number is no lead's now: its history is the events that carried it.
    assert [e.revision for e in _history(store, LeadKey("", PHONE))] == [1]


def test_a_merged_half_gives_its_history_to_the_survivor(store: _Full) -> None:
    phone_half, bsuid_half = _lead(), _lead(phone="", bsuid=BSUID)
    _create(store, phone_half)
    _create(store, bsuid_half)
    merged = replace(bsuid_half, contact_phone=PHONE)

    def merge(tx: WriteTx) -> list[Event]:
        tx.lock_holders(LeadKey("", PHONE, BSUID))
        tx.delete_lead(phone_half)
        tx.update_lead(merged, was=bsuid_half)
        tx.move_history(phone_half, into=merged)
        return tx.append_events(changes_of([(phone_half, None), (bsuid_half, merged)]), T)

    store.write(merge)
    told = [(e.revision, e.kind) for e in _history(store, LeadKey("", "", BSUID))]
    assert told == [(4, UPSERTED), (3, DELETED), (2, UPSERTED), (1, UPSERTED)]
    assert _history(store, LeadKey("", PHONE)) == _history(store, LeadKey("", "", BSUID))


def _erase(store: Store, lead: Lead) -> None:
    def erase(tx: WriteTx) -> None:
        tx.lock_holders(lead.key)
        tx.delete_requests(lead.key)
        tx.delete_lead(lead)
        tx.erase_events(lead)
        tx.append_events(changes_of([(lead, None)]), T)
    store.write(erase)


def test_erasure_leaves_only_the_deleted_event_found_by_its_keys(store: _Full) -> None:
    old = _lead()
    _create(store, old)
    lead = replace(old, contact_phone=OTHER_PHONE, name="Budi")
    _update(store, old, lead)
    _erase(store, lead)
    [deleted] = _history(store, LeadKey("", OTHER_PHONE))
    assert (deleted.kind, deleted.lead) == (DELETED, keys_only(lead))
    assert _history(store, LeadKey("", PHONE)) == []  # its events under the old number too
    # A new lead afterwards has only its own story, and erasing it leaves the first's.
    newcomer = _lead(phone="+6281299997777")
    _create(store, newcomer)
    assert [e.kind for e in _history(store, newcomer.key)] == [UPSERTED]
    _erase(store, newcomer)
    assert _history(store, LeadKey("", OTHER_PHONE)) == [deleted]


def test_pruning_removes_the_oldest_events_and_raises_pruned_through(store: _Full) -> None:
    for i in range(4):
        _create(store, _lead(phone=f"+62812345678{i:02d}"), at=T + i)
    assert store.newest_past(T + 2) == 3 and store.newest_past(T - 1) is None
    assert store.write(lambda tx: tx.prune_events(3, 2)) == 2
    assert store.log_head() == (4, 2)
    assert [e.revision for e in store.events_after(0, 10)] == [3, 4]
    assert store.write(lambda tx: tx.prune_events(3, 10)) == 1
    assert store.write(lambda tx: tx.prune_events(3, 10)) == 0
    assert store.log_head() == (4, 3)


def test_inactive_leads_are_the_longest_silent_first(store: _Full) -> None:
    _create(store, _lead(at=T + 5), _lead(phone=OTHER_PHONE, at=T + 1),
            _lead(phone="", bsuid=BSUID, workspace="toko", at=T + 3))
    assert store.inactive(T + 5, 10) == [LeadKey("", OTHER_PHONE), LeadKey("toko", "", BSUID)]
    assert store.inactive(T + 5, 1) == [LeadKey("", OTHER_PHONE)]


# Request records

def _find(store: Store, key: LeadKey, request_id: str, since: int) -> Lead | None:
    return store.write(lambda tx: tx.find_request(key, request_id, since))


def test_a_request_record_is_found_by_either_key_after_since(store: _Full) -> None:
    lead = _lead(bsuid=BSUID)
    store.write(lambda tx: tx.save_request("r1", T, lead))
    assert _find(store, LeadKey("", PHONE), "r1", T - 1) == lead
    assert _find(store, LeadKey("", "+6281200000000", BSUID), "r1", T - 1) == lead
    assert _find(store, LeadKey("", PHONE), "r1", T) is None  # saved at since: too old
    assert _find(store, LeadKey("", PHONE), "r2", 0) is None
    assert _find(store, LeadKey("toko", PHONE), "r1", 0) is None
    newer = replace(lead, lead_score=9)
    store.write(lambda tx: tx.save_request("r1", T + 1, newer))  # replaces the older one
    assert _find(store, LeadKey("", PHONE), "r1", T) == newer


def test_request_records_are_forgotten_by_key_or_oldest_first(store: _Full) -> None:
    for i, lead in enumerate([_lead(), _lead(phone="", bsuid=BSUID), _lead(OTHER_PHONE)]):
        store.write(lambda tx, i=i, lead=lead: tx.save_request(f"r{i}", T + i, lead))
    store.write(lambda tx: tx.delete_requests(LeadKey("", "", BSUID)))
    assert _find(store, LeadKey("", "", BSUID), "r1", 0) is None
    assert store.write(lambda tx: tx.prune_requests(T + 2, 1)) == 1
    assert _find(store, LeadKey("", PHONE), "r0", 0) is None
    assert _find(store, LeadKey("", OTHER_PHONE), "r2", 0) is not None
    assert store.write(lambda tx: tx.prune_requests(T + 1, 10)) == 0


# The use cases over each store: what the unit tests rely on

def test_a_retried_request_id_is_applied_once(store: _Full) -> None:
    service = SarahService(store, clock=Clock(T))
    patch = Patch(contact_phone=PHONE, add_messages=1, request_id="wamid.1")
    first = service.upsert_state(patch)
    assert service.upsert_state(patch) == first
    assert service.get_state(PHONE, "").message_count == 1
    assert store.log_head() == (1, 0) and service.get_stats(LeadFilter()).total == 1


def test_two_halves_merge_into_one_lead_with_one_history(store: _Full) -> None:
    service = SarahService(store, clock=Clock(T))
    service.upsert_state(Patch(contact_phone=PHONE, add_messages=2))
    service.upsert_state(Patch(contact_phone="", business_scoped_user_id=BSUID, add_messages=3))
    merged = service.upsert_state(Patch(contact_phone=PHONE, business_scoped_user_id=BSUID))
    assert (merged.message_count, service.get_stats(LeadFilter()).total) == (5, 1)
    by_phone = service.list_events(PHONE, "")[0]
    assert by_phone == service.list_events("", "", business_scoped_user_id=BSUID)[0]
    assert [e.kind for e in by_phone] == [UPSERTED, DELETED, UPSERTED, UPSERTED]


def test_erasure_forgets_request_ids_and_purge_erases_the_silent(store: _Full) -> None:
    clock = Clock(T)
    service = SarahService(store, clock=clock, purge_inactive_days=1)
    patch = Patch(contact_phone=PHONE, add_messages=1, request_id="r1")
    service.upsert_state(patch)
    assert service.delete_state(PHONE, "") is True
    assert service.upsert_state(patch).message_count == 1  # applied afresh
    clock.now += REQUEST_ID_TTL_US + 1  # a day and a moment
    assert service.inactive_leads(10) == [LeadKey("", PHONE)]
    assert service.purge(LeadKey("", PHONE)) is True
    assert service.get_stats(LeadFilter()).total == 0
    assert [e.kind for e in service.list_events(PHONE, "")[0]] == [DELETED]


def test_changes_are_logged_as_the_use_case_told_them(store: _Full) -> None:
    changes = [Change(UPSERTED, _lead(), ("contact_phone",))]

    def work(tx: WriteTx) -> list[Event]:
        tx.insert_lead(_lead())
        return tx.append_events(changes, T)

    assert store.write(work) == [Event(1, UPSERTED, _lead(), ("contact_phone",), T)]
