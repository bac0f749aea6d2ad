"""core's Store (server/core/ports.py) in memory, for unit tests of the use cases: no
database, no socket. tests/contract holds it to the behaviour of the real repository.

A write runs on a copy of the state under one lock (one writer at a time, as SQLite) and
replaces the state when the unit of work returns: all of it or none. A key that a write
would give two leads fails as the database's unique indexes make it fail.
"""

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import NamedTuple, TypeVar

from server.core import ports
from server.core.activity import ActivityChange, ActivityDeltas, ActivityRow
from server.core.changes import DELETED, Change, Event
from server.core.counts import CountChange, CountDeltas, CountRow
from server.core.delivery import LogReader
from server.core.domain import Lead, LeadFilter, LeadKey
from server.core.errors import Unavailable
from server.core.identity import Holders

_T = TypeVar("_T")
_RowKey = tuple[str, str, str]  # (workspace_id, contact_phone, business_scoped_user_id)
# LeadFilter's fields, and whether a lead passes each (the repository's PAGE_FILTERS).
_FILTERS: dict[str, Callable[[Lead, object], bool]] = {
    "workspace_id": lambda lead, v: lead.workspace_id == v,
    "temperature": lambda lead, v: lead.lead_temperature == v,
    "state": lambda lead, v: lead.state == v,
    "min_score": lambda lead, v: isinstance(v, int) and lead.lead_score >= v,
}


class _Logged(NamedTuple):
    event: Event
    lead_id: int  # the row whose story it is; 0: an erased lead's deleted event


class _Request(NamedTuple):
    id: int
    created_at: int
    result: Lead


@dataclass
class _State:
    """Everything stored; a write works on a copy (the values are immutable)."""

    leads: dict[int, Lead] = field(default_factory=dict)
    events: dict[int, _Logged] = field(default_factory=dict)
    requests: dict[tuple[str, str, str, str], _Request] = field(default_factory=dict)
    counts: dict[tuple[str, str, str], tuple[int, int]] = field(default_factory=dict)
    activity: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    revision: int = 0
    pruned_through: int = 0
    next_id: int = 1

    def copy(self) -> "_State":
        return replace(self, leads=dict(self.leads), events=dict(self.events),
                       requests=dict(self.requests), counts=dict(self.counts),
                       activity=dict(self.activity))

    def holder(self, workspace_id: str, field_name: str, value: str) -> tuple[int, Lead] | None:
        if not value:
            return None
        return next(((i, lead) for i, lead in self.leads.items()
                     if lead.workspace_id == workspace_id
                     and getattr(lead, field_name) == value), None)

    def holders(self, key: LeadKey) -> tuple[Holders, dict[_RowKey, int]]:
        found = [self.holder(key.workspace_id, "business_scoped_user_id",
                             key.business_scoped_user_id),
                 self.holder(key.workspace_id, "contact_phone", key.contact_phone)]
        ids = {_row_key(row[1]): row[0] for row in found if row is not None}
        by_bsuid, by_phone = (None if row is None else row[1] for row in found)
        return Holders(by_bsuid=by_bsuid, by_phone=by_phone), ids

    def carrying(self, key: LeadKey) -> list[_Logged]:
        """The events that carried either key of `key`."""
        def carries(lead: Lead | None) -> bool:
            return lead is not None and lead.workspace_id == key.workspace_id and (
                bool(key.contact_phone) and lead.contact_phone == key.contact_phone
                or bool(key.business_scoped_user_id)
                and lead.business_scoped_user_id == key.business_scoped_user_id)
        return [logged for logged in self.events.values() if carries(logged.event.lead)]


def _row_key(lead: Lead) -> _RowKey:
    return lead.workspace_id, lead.contact_phone, lead.business_scoped_user_id


class MemoryTx:
    """A write transaction over a copy of the state (ports.WriteTx)."""

    def __init__(self, state: _State):
        self._state = state
        self._row_ids: dict[_RowKey, int] = {}
        self._gone: dict[_RowKey, int] = {}  # as the repository's WriteTx._gone
        self.appended: list[Event] = []
        self.count_changes: list[CountChange] = []
        self.activity_changes: list[ActivityChange] = []

    def lock_keys(self, keys: Iterable[LeadKey]) -> None:
        """Nothing to do: one writer at a time holds every key."""

    def lock_holders(self, key: LeadKey) -> Holders:
        holders, ids = self._state.holders(key)
        self._row_ids.update(ids)
        return holders

    def lock_leads(self, keys: Iterable[LeadKey]) -> list[Lead]:
        found: dict[_RowKey, Lead] = {}
        for key in keys:
            holders = self.lock_holders(key)
            for lead in (holders.by_bsuid, holders.by_phone):
                if lead is not None:
                    found[_row_key(lead)] = lead
        return list(found.values())

    def _check_unique(self, lead: Lead, row_id: int) -> None:
        for name in ("contact_phone", "business_scoped_user_id"):
            held = self._state.holder(lead.workspace_id, name, getattr(lead, name))
            if held is not None and held[0] != row_id:
                # The repository's unique index: IntegrityError, retried, then this.
                raise Unavailable(f"write conflict, retry: {name} is another lead's")

    def insert_lead(self, lead: Lead) -> None:
        row_id, self._state.next_id = self._state.next_id, self._state.next_id + 1
        self._check_unique(lead, row_id)
        self._state.leads[row_id] = lead
        self._row_ids[_row_key(lead)] = row_id

    def insert_leads(self, leads: Iterable[Lead]) -> None:
        for lead in leads:
            self.insert_lead(lead)

    def update_lead(self, lead: Lead, was: Lead | None = None) -> None:
        row_id = self._row_ids.pop(_row_key(was or lead))
        self._check_unique(lead, row_id)
        self._row_ids[_row_key(lead)] = row_id
        self._state.leads[row_id] = lead

    def delete_lead(self, lead: Lead) -> None:
        row_id = self._row_ids.pop(_row_key(lead))
        self._gone[_row_key(lead)] = row_id
        del self._state.leads[row_id]

    def move_history(self, half: Lead, into: Lead) -> None:
        survivor, gone = self._row_ids[_row_key(into)], self._gone[_row_key(half)]
        events = self._state.events
        for revision, logged in list(events.items()):
            if logged.lead_id == gone:
                events[revision] = logged._replace(lead_id=survivor)
        self._gone[_row_key(half)] = survivor

    def add_counts(self, deltas: CountDeltas) -> None:
        self.count_changes.extend(deltas.changes())

    def add_activity(self, deltas: ActivityDeltas) -> None:
        self.activity_changes.extend(deltas.changes())

    def append_events(self, changes: list[Change], at: int) -> list[Event]:
        if not changes:
            return []
        first = self._state.revision + 1
        self._state.revision += len(changes)
        events = []
        for i, change in enumerate(changes):
            lead_id = (self._gone if change.kind == DELETED else self._row_ids)[
                _row_key(change.lead)]
            event = Event(first + i, change.kind, change.lead, change.changed, at)
            self._state.events[event.revision] = _Logged(event, lead_id)
            events.append(event)
        self.appended.extend(events)
        return events

    def erase_events(self, lead: Lead) -> None:
        gone = self._gone[_row_key(lead)]
        erased = {r for r, logged in self._state.events.items() if logged.lead_id == gone}
        erased |= {logged.event.revision for logged in self._state.carrying(lead.key)
                   if logged.lead_id == 0}
        for revision in erased:
            del self._state.events[revision]
        self._gone[_row_key(lead)] = 0

    def prune_events(self, through: int, limit: int) -> int:
        oldest = sorted(r for r in self._state.events if r <= through)[:limit]
        if not oldest:
            return 0
        for revision in oldest:
            del self._state.events[revision]
        self._state.pruned_through = max(self._state.pruned_through, oldest[-1])
        return len(oldest)

    def find_request(self, key: LeadKey, request_id: str, since: int) -> Lead | None:
        for at, value in ((1, key.contact_phone), (2, key.business_scoped_user_id)):
            for record, saved in self._state.requests.items():
                if value and (record[0], record[at], record[3]) == (
                        key.workspace_id, value, request_id) and saved.created_at > since:
                    return saved.result
        return None

    def save_request(self, request_id: str, created_at: int, lead: Lead) -> None:
        record = (*_row_key(lead), request_id)
        old = self._state.requests.get(record)
        if old is None:
            row_id, self._state.next_id = self._state.next_id, self._state.next_id + 1
        else:
            row_id = old.id
        self._state.requests[record] = _Request(row_id, created_at, lead)

    def prune_requests(self, created_up_to: int, limit: int) -> int:
        requests = self._state.requests
        gone = sorted((saved.id, record) for record, saved in requests.items()
                      if saved.created_at <= created_up_to)[:limit]
        for _, record in gone:
            del requests[record]
        return len(gone)

    def delete_requests(self, key: LeadKey) -> None:
        requests = self._state.requests
        for record in list(requests):
            workspace_id, phone, bsuid, _ = record
            if workspace_id == key.workspace_id and (
                    key.contact_phone and phone == key.contact_phone
                    or key.business_scoped_user_id and bsuid == key.business_scoped_user_id):
                del requests[record]


def _add_totals(state: _State, txs: Iterable[MemoryTx]) -> None:
    """The count and activity changes of a transaction, summed per row, as totals.py."""
    counts: dict[tuple[str, str, str], list[int]] = {}
    activity: dict[tuple[str, int], list[int]] = {}
    for tx in txs:
        for c in tx.count_changes:
            sums = counts.setdefault((c.workspace_id, c.lead_temperature, c.state), [0, 0])
            sums[0], sums[1] = sums[0] + c.n, sums[1] + c.score_sum
        for a in tx.activity_changes:
            row = activity.setdefault((a.workspace_id, a.bucket), [0] * 5)
            for i, n in enumerate(a[2:]):
                row[i] += n
    for bucket, (n, score_sum) in counts.items():
        if n or score_sum:
            was = state.counts.get(bucket, (0, 0))
            state.counts[bucket] = (was[0] + n, was[1] + score_sum)
    for key, added in activity.items():
        if any(added):
            was_row = state.activity.get(key, (0,) * 5)
            state.activity[key] = tuple(w + a for w, a in zip(was_row, added, strict=True))


class MemoryStore:
    """The leads, their counts, activity and change log in memory (ports.Store, and
    delivery's LogReader)."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.RLock()
        self._commit_listeners: list[Callable[[list[Event]], None]] = []

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        self._commit_listeners.append(listener)

    def write(self, work: Callable[[ports.WriteTx], _T]) -> _T:
        with self._lock:
            state = self._state.copy()
            tx = MemoryTx(state)
            result = work(tx)
            _add_totals(state, [tx])
            self._state = state
        if tx.appended:
            for listener in self._commit_listeners:
                listener(list(tx.appended))
        return result

    def holders(self, key: LeadKey) -> Holders:
        return self._state.holders(key)[0]

    def page(self, lead_filter: LeadFilter, order_key: str, after: ports.Position | None,
             limit: int) -> tuple[list[Lead], int]:
        state = self._state  # one snapshot: a write replaces it, never changes it
        tests = [(_FILTERS[name], value) for name, value in vars(lead_filter).items()
                 if value is not None]

        def position(lead: Lead) -> ports.Position:
            return (getattr(lead, order_key), lead.contact_phone, lead.business_scoped_user_id,
                    lead.workspace_id)

        leads = [lead for lead in state.leads.values()
                 if all(test(lead, value) for test, value in tests)
                 and (after is None or position(lead) < after)]
        return sorted(leads, key=position, reverse=True)[:limit], state.revision

    def counts(self, workspace_id: str | None) -> tuple[list[CountRow], int]:
        state = self._state
        rows = [CountRow(temperature, lead_state, n, score_sum)
                for (ws, temperature, lead_state), (n, score_sum) in sorted(state.counts.items())
                if workspace_id is None or ws == workspace_id]
        return rows, state.revision

    def history(self, key: LeadKey, meant: Callable[[LeadKey, Holders], Lead | None],
                before: int | None, limit: int) -> list[Event]:
        state = self._state
        holders, ids = state.holders(key)
        lead = meant(key, holders)
        if lead is None:
            found = state.carrying(key)
        else:
            found = [logged for logged in state.events.values()
                     if logged.lead_id == ids[_row_key(lead)]]
        events = [logged.event for logged in found
                  if before is None or logged.event.revision < before]
        return sorted(events, key=lambda event: -event.revision)[:limit]

    def activity(self, workspace_id: str | None, starts: list[int]) -> list[ActivityRow]:
        state = self._state
        rows = []
        for first, end in zip(starts, starts[1:], strict=False):
            sums = [0] * 5
            for (ws, bucket), counted in state.activity.items():
                if first <= bucket < end and workspace_id in (None, ws):
                    sums = [s + n for s, n in zip(sums, counted, strict=True)]
            rows.append(ActivityRow(first, *sums))
        return rows

    def newest_past(self, at_up_to: int) -> int | None:
        past = [(e.at, e.revision) for e, _ in self._state.events.values() if e.at <= at_up_to]
        return max(past)[1] if past else None

    def inactive(self, last_message_before: int, limit: int) -> list[LeadKey]:
        silent = sorted((lead.last_message_at, row_id, lead.key)
                        for row_id, lead in self._state.leads.items()
                        if lead.last_message_at is not None
                        and lead.last_message_at < last_message_before)
        return [key for _, _, key in silent[:limit]]

    def log_head(self) -> tuple[int, int]:
        state = self._state
        return state.revision, state.pruned_through

    def events_after(self, revision: int, limit: int) -> list[Event]:
        events = self._state.events
        return [events[r].event for r in sorted(r for r in events if r > revision)][:limit]

    def count(self) -> int:
        """How many leads are stored, in every workspace."""
        return len(self._state.leads)


def _implements_ports(store: MemoryStore, tx: MemoryTx
                      ) -> tuple[ports.Store, ports.WriteTx, LogReader]:
    """Never called: mypy checks here that the memory store is what core's ports ask for."""
    return store, tx, store
