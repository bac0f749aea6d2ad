"""The repository: every query the service makes, as plain operations on plain values.

Reads run on their own; writes run inside `Repository.write`, whose transaction offers
the operations of a write (WriteTx). Which operations a use case runs, in which order, and
why, is the use case's business (core/service.py); here live only the storage mechanics:
connections, SQLite's one writer, group commit (a group's transaction, a savepoint per
write; the queue and its thread are group_commit.py's), retrying a lost insert race, and
the SQL. The hot path runs compiled statements (statements.py); the rest uses peewee's
query builder.
"""

import contextlib
import copy
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import peewee

from server.core import ports
from server.core.activity import ActivityChange, ActivityDeltas, ActivityRow
from server.core.changes import DELETED, Change, Event
from server.core.counts import CountChange, CountDeltas, CountRow
from server.core.domain import Lead, LeadFilter, LeadKey
from server.core.errors import Unavailable
from server.core.identity import Holders
from server.storage import activity_reads, changelog, retention
from server.storage.database import LOCK_WAIT_MS, is_sqlite, snapshot
from server.storage.errors import as_unavailable, database_errors, is_deadlock
from server.storage.group_commit import ALONE, Alone, GroupWriter, Job
from server.storage.lead_json import lead_from_json, lead_to_json, lead_values
from server.storage.models import (
    ConversationRow,
    LeadCount,
    UpsertRequestRow,
    bind_models,
)
from server.storage.page_leads import PageLeads
from server.storage.statements import (
    LEAD_COLUMNS,
    PAGE_AFTER,
    PAGE_FILTERS,
    Statement,
    Statements,
)
from server.storage.writer_lock import WriterLock

_LOGGER = logging.getLogger(__name__)
# Tries of a write that lost an insert race or was PostgreSQL's deadlock victim.
_RETRIES = 3
# Under SQLite's oldest limit of 999 variables per statement: 2 per key, 16 per row.
_KEYS_PER_QUERY = 400
_ROWS_PER_INSERT = 50
_T = TypeVar("_T")
_Change = TypeVar("_Change", CountChange, ActivityChange)
_RowKey = tuple[str, str, str]  # (workspace_id, contact_phone, business_scoped_user_id)
_PAIN_POINTS = LEAD_COLUMNS.index("pain_points")


class _Outcome(NamedTuple):
    """What one write of a group came to: its result or its error."""

    result: object
    error: Exception | None
    tx: "WriteTx | None"  # what it wrote, if it succeeded


def _copy(exc: Exception) -> Exception:
    """`exc` for one of a group's callers: each raises its own, on its own thread."""
    try:
        mine = copy.copy(exc)
    except Exception:  # an exception that cannot be rebuilt from its args: shared, then
        return exc
    mine.__cause__ = exc
    return mine


def _lead_from_tuple(row: tuple[Any, ...]) -> Lead:
    """A Lead from a row of (id, *LEAD_COLUMNS)."""
    values = list(row[1:])
    values[_PAIN_POINTS] = tuple(json.loads(values[_PAIN_POINTS]))
    return Lead(*values)


def _row_values(lead: Lead) -> dict[str, Any]:
    values = lead_values(lead)
    values["pain_points"] = json.dumps(list(lead.pain_points), ensure_ascii=False)
    return values


def _tuples(query: "peewee.ModelSelect[Any]") -> Iterator[tuple[Any, ...]]:
    """The rows of `query` as plain tuples: a model object per row cost more than the
    query. (peewee's types do not follow .tuples(), which changes what rows are.)"""
    rows: Iterator[tuple[Any, ...]] = iter(cast(Any, query.tuples()))
    return rows


def _lead_columns() -> list[peewee.Field]:
    return [ConversationRow.id, *(getattr(ConversationRow, c) for c in LEAD_COLUMNS)]


def _row_key(lead: Lead) -> _RowKey:
    return lead.workspace_id, lead.contact_phone, lead.business_scoped_user_id


def _advisory_key(workspace_id: str, kind: str, value: str) -> int:
    """A signed 64-bit number standing for one key of one workspace."""
    digest = hashlib.blake2b(f"{workspace_id}\x00{kind}\x00{value}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _key_parts(key: LeadKey) -> list[tuple[str, str]]:
    parts = [("phone", key.contact_phone), ("bsuid", key.business_scoped_user_id)]
    return [(kind, value) for kind, value in parts if value]


def _summed(changes: Iterable[_Change], key_length: int) -> list[_Change]:
    """`changes` (named tuples: a row's key, then amounts) summed per key, in key order,
    without the rows whose amounts sum to nothing."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    made: Callable[..., _Change] | None = None
    for change in changes:
        made = made or type(change)
        amounts = sums.setdefault(tuple(change[:key_length]), [0] * (len(change) - key_length))
        for i, amount in enumerate(change[key_length:]):
            amounts[i] += int(amount)
    return [made(*key, *amounts) for key, amounts in sorted(sums.items())
            if made is not None and any(amounts)]


def write_totals(db: peewee.Database, sql: Statements, txs: Iterable["WriteTx"]) -> None:
    """Write the count and activity changes of the writes `txs` of one transaction, summed
    per row, at its end: each such row is locked once, for the shortest time, and in one
    order by every transaction (PostgreSQL: no deadlock between two replicas' groups on the
    few rows every write changes)."""
    txs = list(txs)
    for change in _summed((c for tx in txs for c in tx.count_changes), 3):
        sql.add_to_count.run(db, change._asdict())
    for activity in _summed((a for tx in txs for a in tx.activity_changes), 2):
        sql.add_activity.run(db, activity._asdict())


class WriteTx:
    """The operations of one write transaction. A lead is updated or deleted by the row
    that lock_lead or lock_leads found for its key in this transaction."""

    def __init__(self, db: peewee.Database, sql: Statements):
        self._db = db
        self._sql = sql
        self._row_ids: dict[_RowKey, int] = {}
        # The row whose story the deleted event of each lead removed here belongs to: its
        # own, or a merge's survivor's.
        self._gone: dict[_RowKey, int] = {}
        self.appended: list[Event] = []
        self.count_changes: list[CountChange] = []
        self.activity_changes: list[ActivityChange] = []

    def _found(self, row: tuple[Any, ...] | None) -> Lead | None:
        if row is None:
            return None
        lead = _lead_from_tuple(row)
        self._row_ids[_row_key(lead)] = row[0]
        return lead

    def lock_keys(self, keys: Iterable[LeadKey]) -> None:
        """Hold every key of `keys` until the transaction ends, even a key no lead holds
        yet: two writers naming a key (one person's two halves, or one new BSUID) then
        run one after the other. PostgreSQL takes advisory locks, in one sorted order (no
        deadlock); SQLite's one writer already holds everything."""
        if is_sqlite(self._db):
            return
        numbers = sorted({_advisory_key(key.workspace_id, kind, value)
                          for key in keys for kind, value in _key_parts(key)})
        for number in numbers:
            self._db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (number,))

    def lock_holders(self, key: LeadKey) -> Holders:
        """The stored leads that hold `key`'s BSUID and phone, locked until the
        transaction ends (on PostgreSQL; SQLite's writer lock already covers them)."""
        by_bsuid = by_phone = None
        if key.business_scoped_user_id:
            by_bsuid = self._found(self._sql.lock_by_bsuid.run(self._db, {
                "workspace_id": key.workspace_id,
                "business_scoped_user_id": key.business_scoped_user_id}).fetchone())
        if key.contact_phone:
            if by_bsuid is not None and by_bsuid.contact_phone == key.contact_phone:
                by_phone = by_bsuid
            else:
                by_phone = self._found(self._sql.lock_lead.run(self._db, {
                    "workspace_id": key.workspace_id,
                    "contact_phone": key.contact_phone}).fetchone())
        return Holders(by_bsuid=by_bsuid, by_phone=by_phone)

    def lock_leads(self, keys: Iterable[LeadKey]) -> list[Lead]:
        """The stored leads holding any key of `keys`, locked like lock_holders', in a
        few queries."""
        keys = list(keys)
        c = ConversationRow
        by_phone = peewee.Tuple(c.workspace_id, c.contact_phone)
        by_bsuid = peewee.Tuple(c.workspace_id, c.business_scoped_user_id)
        phones = sorted({(k.workspace_id, k.contact_phone) for k in keys if k.contact_phone})
        bsuids = sorted({(k.workspace_id, k.business_scoped_user_id) for k in keys
                         if k.business_scoped_user_id})
        found: dict[_RowKey, Lead] = {}
        for column, values in ((by_phone, phones), (by_bsuid, bsuids)):
            for part in peewee.chunked(values, _KEYS_PER_QUERY):
                query = c.select(*_lead_columns()).where(column.in_(part))
                if self._db.for_update:
                    query = query.for_update()
                for row in _tuples(query):
                    lead = self._found(row)
                    assert lead is not None
                    found[_row_key(lead)] = lead
        return list(found.values())

    def insert_lead(self, lead: Lead) -> None:
        cursor = self._sql.insert_lead.run(self._db, _row_values(lead))
        # PostgreSQL's INSERT returns the id (peewee adds RETURNING); SQLite's cursor has it.
        row_id = cursor.lastrowid if is_sqlite(self._db) else cursor.fetchone()[0]
        self._row_ids[_row_key(lead)] = int(row_id)

    def insert_leads(self, leads: Iterable[Lead]) -> None:
        c = ConversationRow
        rows = [_row_values(lead) for lead in leads]
        for part in peewee.chunked(rows, _ROWS_PER_INSERT):
            inserted = c.insert_many(part).returning(
                c.id, c.workspace_id, c.contact_phone, c.business_scoped_user_id)
            for row_id, *key in cast(Any, inserted.tuples().execute()):
                self._row_ids[(key[0], key[1], key[2])] = int(row_id)

    def update_lead(self, lead: Lead, was: Lead | None = None) -> None:
        """Write `lead` over the row found in this transaction as `was` (by default, the
        row of `lead`'s own keys)."""
        row_id = self._row_ids.pop(_row_key(was or lead))
        self._row_ids[_row_key(lead)] = row_id
        self._sql.update_lead.run(self._db, {**_row_values(lead), "id": row_id})

    def delete_lead(self, lead: Lead) -> None:
        """Delete the row found in this transaction as `lead`."""
        row_id = self._row_ids.pop(_row_key(lead))
        self._gone[_row_key(lead)] = row_id
        ConversationRow.delete().where(ConversationRow.id == row_id).execute()

    def move_history(self, half: Lead, into: Lead) -> None:
        """Give the events of `half`, deleted in this transaction as a merge's absorbed
        half, to the row of `into` (the survivor as written here), its deleted event too."""
        survivor = self._row_ids[_row_key(into)]
        changelog.move(self._db, self._gone[_row_key(half)], survivor)
        self._gone[_row_key(half)] = survivor

    def add_counts(self, deltas: CountDeltas) -> None:
        """Change the lead counts at the transaction's end (write_totals)."""
        self.count_changes.extend(deltas.changes())

    def add_activity(self, deltas: ActivityDeltas) -> None:
        """Add the write's activity to its quarter-hours' rows at the transaction's end."""
        self.activity_changes.extend(deltas.changes())

    def append_events(self, changes: list[Change], at: int) -> list[Event]:
        """Log the write's events with their revisions, each under the row of the lead it
        tells of; the use case calls it last (it serialises writers from here to commit:
        changelog.py says why)."""
        lead_ids = [(self._gone if c.kind == DELETED else self._row_ids)[_row_key(c.lead)]
                    for c in changes]
        events = changelog.append(self._db, self._sql.insert_event, changes, lead_ids, at)
        self.appended.extend(events)
        return events

    def erase_events(self, lead: Lead) -> None:
        """Remove the logged events of `lead`, deleted in this transaction (erasure). Its
        deleted event, logged after this, belongs to no row (lead_id 0, found by its keys):
        SQLite hands the highest row id out again after that row is deleted, and the next
        new lead's history must not start with someone else's erasure."""
        changelog.erase(self._db, self._gone[_row_key(lead)], lead.key)
        self._gone[_row_key(lead)] = 0

    def prune_events(self, through: int, limit: int) -> int:
        """Remove up to `limit` of the oldest events at or below revision `through` (and
        remember them as pruned); how many went."""
        return retention.prune_events(self._db, through, limit)

    def find_request(self, key: LeadKey, request_id: str, since: int) -> Lead | None:
        """The lead a request_id left, saved after `since` under either key of `key`."""
        values = {"workspace_id": key.workspace_id, "contact_phone": key.contact_phone,
                  "business_scoped_user_id": key.business_scoped_user_id,
                  "request_id": request_id, "since": since}
        seen = None
        if key.contact_phone:
            seen = self._sql.select_request.run(self._db, values).fetchone()
        if seen is None and key.business_scoped_user_id:
            seen = self._sql.select_request_by_bsuid.run(self._db, values).fetchone()
        return lead_from_json(seen[0]) if seen else None

    def save_request(self, request_id: str, created_at: int, lead: Lead) -> None:
        """Remember what `request_id` left, under the lead's keys (replacing an older
        record of it)."""
        self._sql.save_request.run(self._db, {
            "workspace_id": lead.workspace_id, "contact_phone": lead.contact_phone,
            "business_scoped_user_id": lead.business_scoped_user_id,
            "request_id": request_id, "created_at": created_at, "result": lead_to_json(lead),
        })

    def prune_requests(self, created_up_to: int, limit: int) -> int:
        """Forget up to `limit` requests saved at or before `created_up_to`; how many went."""
        return retention.prune_requests(self._db, created_up_to, limit)

    def delete_requests(self, key: LeadKey) -> None:
        """Forget every request saved under either key of `key`."""
        r = UpsertRequestRow
        for column, value in ((r.contact_phone, key.contact_phone),
                              (r.business_scoped_user_id, key.business_scoped_user_id)):
            if value:
                r.delete().where((r.workspace_id == key.workspace_id)
                                 & (column == value)).execute()


class Repository:
    """Conversations and their counts in one peewee database."""

    def __init__(self, db: peewee.Database, group_commit: bool = True):
        self._db = db
        self._writers = threading.Lock()
        # Writers of the other processes on the same file (--workers) queue here too.
        self._processes = (WriterLock(Path(db.database)) if is_sqlite(db)
                           and db.database not in ("", ":memory:") else None)
        self._group = GroupWriter(self._write_group, queue_wait_s=LOCK_WAIT_MS / 1000
                                  ) if group_commit else None
        bind_models(db)
        self._sql = Statements(db)
        self._page_leads = PageLeads(_lead_from_tuple, 1 + LEAD_COLUMNS.index("etag"))
        self._commit_listeners: list[Callable[[list[Event]], None]] = []

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        """Call `listener` with the events of each write that logged some, after it
        committed (in the writer's thread: it must be quick)."""
        self._commit_listeners.append(listener)

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """A pooled connection for the duration, with driver errors mapped to Unavailable."""
        with database_errors(), self._db.connection_context():
            yield

    def close(self) -> None:
        """Stop the writer and close every connection of every thread (the server has
        stopped calling)."""
        if self._group is not None:
            self._group.close()
        close_all = getattr(self._db, "close_all", self._db.close)
        close_all()
        if self._processes is not None:
            self._processes.close()

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        if not is_sqlite(self._db):
            with self._db.atomic():
                yield
            return
        # SQLite has one writer at a time. Writers of this process queue on a lock, in
        # order, rather than in SQLite's busy handler, which sleeps up to 100 ms a try
        # (that was UpsertState's p99). The lock is taken up front (BEGIN IMMEDIATE): a
        # deferred transaction that upgrades to a write fails at once with "database is
        # locked" when another process writes.
        # Other processes' writers queue on a file lock (writer_lock.py says why), taken
        # within what is left of the same wait.
        deadline = time.monotonic() + LOCK_WAIT_MS / 1000
        if not self._writers.acquire(timeout=LOCK_WAIT_MS / 1000):
            raise Unavailable("the database is busy with other writes; retry shortly")
        try:
            if self._processes is not None and not self._processes.acquire(
                    max(0.0, deadline - time.monotonic())):
                raise Unavailable("the database is busy with other writes; retry shortly")
            try:
                with self._db.atomic("IMMEDIATE"):
                    yield
            finally:
                if self._processes is not None:
                    self._processes.release()
        finally:
            self._writers.release()

    def write(self, work: Callable[[WriteTx], _T]) -> _T:
        """Run `work` in a write transaction and return its result once that committed; all
        of it is written or none. With group commit, the transaction also holds the writes
        queued beside it (group_commit.py), `work`'s in a savepoint of its own, so a
        failing write fails alone. `work` may run more than once (a concurrent first insert
        of the same key won, or its group was rolled back for another write's sake), so it
        must read what it needs through the transaction it is given."""
        if self._group is None or self._group.in_writer():
            return self._write_alone(work)
        result = self._group.call(work)
        if isinstance(result, Alone):
            return self._write_alone(work)
        return cast(_T, result)

    def queued_writes(self) -> int:
        """How many writes wait for the group writer (0 without group commit)."""
        return 0 if self._group is None else self._group.queued()

    def _write_alone(self, work: Callable[[WriteTx], _T]) -> _T:
        """`work` in a transaction of its own."""
        for attempt in range(_RETRIES):
            try:
                with self._session(), self._write_transaction():
                    tx = WriteTx(self._db, self._sql)
                    result = work(tx)
                    write_totals(self._db, self._sql, [tx])
                self._notify(tx.appended)
                return result
            except peewee.IntegrityError as exc:
                # Only without SQLite's up-front lock: two first writes of one lead (or one
                # request_id) raced; the retry sees the winner's row.
                if attempt == _RETRIES - 1:
                    raise Unavailable(f"write conflict, retry: {exc}") from exc
            except Unavailable as exc:
                # PostgreSQL broke a lock cycle with another replica's group of writes by
                # failing this one: it did nothing wrong, so it runs again.
                if not is_deadlock(exc) or attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _write_group(self, jobs: list[Job]) -> None:
        """Run `jobs` in one transaction, each in a savepoint, and settle each job once the
        transaction committed: its result, or its own exception. If the transaction may be
        broken (or PostgreSQL chose it to break a deadlock), nothing of it is kept and every
        job gets ALONE; if it failed to begin or to commit, every job gets that error, as
        each write would have on its own."""
        outcomes: list[_Outcome] = []
        broken = False
        try:
            with self._session(), self._write_transaction():
                try:
                    for job in jobs:
                        outcomes.append(self._member(job.work))
                    write_totals(self._db, self._sql,
                                 (outcome.tx for outcome in outcomes if outcome.tx))
                except peewee.PeeweeException:
                    broken = True
                    raise
        except peewee.IntegrityError:  # only a constraint checked at commit: retry alone
            broken = True
        except Exception as exc:
            if not broken:
                for job in jobs:
                    job.fail(_copy(exc))
                return
        if broken:
            for job in jobs:
                job.settle(ALONE)
            return
        self._notify([event for outcome in outcomes if outcome.tx
                      for event in outcome.tx.appended])
        for job, outcome in zip(jobs, outcomes, strict=True):
            if outcome.error is None:
                job.settle(outcome.result)
            else:
                job.fail(outcome.error)

    def _member(self, work: Callable[[WriteTx], object]) -> _Outcome:
        """One write of a group, in a savepoint: on its failure the savepoint is rolled
        back and the failure is its own. A database error escaping from here (the rollback
        to the savepoint failed: SQLite rolls the whole transaction back on some errors;
        or a deadlock) means the group's transaction cannot go on."""
        for _attempt in range(_RETRIES):
            tx = WriteTx(self._db, self._sql)
            savepoint = self._db.savepoint()
            savepoint.__enter__()
            try:
                result = work(tx)
            except Exception as exc:
                savepoint.rollback(begin=False)
                if isinstance(exc, peewee.IntegrityError):  # an insert race: see _write_alone
                    race = exc
                    continue
                if isinstance(exc, peewee.PeeweeException):
                    if is_deadlock(exc):
                        raise  # this group's locks must go: another replica's group waits
                    return _Outcome(None, as_unavailable(exc), None)
                return _Outcome(None, exc, None)  # the write's own (an etag mismatch ...)
            savepoint.commit(begin=False)
            return _Outcome(result, None, tx)
        return _Outcome(None, Unavailable(f"write conflict, retry: {race}"), None)

    def _notify(self, events: list[Event]) -> None:
        """Tell the commit listeners about committed events, if there are any."""
        if not events:
            return
        for listener in self._commit_listeners:
            try:
                listener(events)
            except Exception:  # the writes committed: a listener's failure is not theirs
                _LOGGER.exception("a commit listener failed")

    def holders(self, key: LeadKey) -> Holders:
        """The stored leads that hold `key`'s BSUID and phone (a read: nothing locked)."""
        with self._session():
            return self._holders(key)[0]

    def _holders(self, key: LeadKey) -> tuple[Holders, dict[_RowKey, int]]:
        """The holders of `key`, and their row ids."""
        ids: dict[_RowKey, int] = {}

        def holder(statement: Statement, column: str, value: str) -> Lead | None:
            if not value:
                return None
            row = statement.run(self._db, {"workspace_id": key.workspace_id,
                                           column: value}).fetchone()
            if row is None:
                return None
            lead = _lead_from_tuple(row)
            ids[_row_key(lead)] = int(row[0])
            return lead

        by_bsuid = holder(self._sql.select_by_bsuid, "business_scoped_user_id",
                          key.business_scoped_user_id)
        by_phone = holder(self._sql.select_lead, "contact_phone", key.contact_phone)
        return Holders(by_bsuid=by_bsuid, by_phone=by_phone), ids

    def history(self, key: LeadKey, meant: Callable[[LeadKey, Holders], Lead | None],
                before: int | None, limit: int) -> list[Event]:
        """Up to `limit` events before revision `before` (None: the newest), newest first,
        of the stored lead `meant` chooses among `key`'s holders; with none, the events
        that carried either key of `key`. One snapshot: a lead that changes identity
        meanwhile is seen either before or after."""
        with self._snapshot():
            holders, ids = self._holders(key)
            lead = meant(key, holders)
            if lead is None:
                return changelog.carrying(self._db, key, before, limit)
            return changelog.of_lead(self._db, ids[_row_key(lead)], before, limit)

    def activity(self, workspace_id: str | None, starts: list[int]) -> list[ActivityRow]:
        """The activity of one workspace, or summed over all, for each range of
        quarter-hours from starts[i] up to (not including) starts[i + 1]: a row per range,
        whose bucket is its start."""
        with self._session():
            return activity_reads.per_range(self._db, workspace_id, starts)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: its statements all see the same committed state."""
        with self._session(), snapshot(self._db):
            yield

    def log_head(self) -> tuple[int, int]:
        """(latest committed revision, latest revision retention removed)."""
        with self._session():
            return changelog.head(self._db)

    def events_after(self, revision: int, limit: int) -> list[Event]:
        """Up to `limit` logged events after `revision`, in order."""
        with self._session():
            return changelog.after(self._db, revision, limit)

    def newest_past(self, at_up_to: int) -> int | None:
        """The revision of the newest event committed at or before `at_up_to`, if any."""
        with self._session():
            return retention.newest_past(self._db, at_up_to)

    def inactive(self, last_message_before: int, limit: int) -> list[LeadKey]:
        """The keys of up to `limit` leads silent since before `last_message_before`."""
        with self._session():
            return retention.inactive(self._db, last_message_before, limit)

    def page(self, lead_filter: LeadFilter, order_key: str,
             after: tuple[int, str, str, str] | None, limit: int) -> tuple[list[Lead], int]:
        """Return up to `limit` leads ordered by `order_key` descending, then contact_phone,
        business_scoped_user_id and workspace_id descending (a lead has a phone or a BSUID,
        so the order is total), strictly after the position `after`; and the revision
        the page is as of."""
        values: dict[str, Any] = {name: getattr(lead_filter, name) for name in PAGE_FILTERS
                                  if getattr(lead_filter, name) is not None}
        shape = (tuple(values), order_key, after is not None)
        if after is not None:
            values.update(zip(PAGE_AFTER, after, strict=True))
        values["limit"] = limit
        with self._snapshot():
            revision = changelog.head(self._db)[0]
            keys = self._sql.page(*shape, keys_only=True).run(self._db, values).fetchall()
            leads = self._page_leads.known(keys)
            if leads is None:  # a lead not read lately: the page whole, in the same snapshot
                rows = self._sql.page(*shape).run(self._db, values).fetchall()
                leads = self._page_leads.keep(rows)
        return leads, revision

    def counts(self, workspace_id: str | None) -> tuple[list[CountRow], int]:
        """The lead counts of one workspace, or of all (a row per workspace and bucket), and
        the revision they are as of."""
        with self._session():
            if workspace_id is None:
                rows = self._sql.counts_of_all.run(self._db, {})
            else:
                rows = self._sql.counts_of_workspace.run(self._db, {"workspace_id": workspace_id})
            found = rows.fetchall()
        # Each row is (revision, *a count row); a workspace without counts has one row of
        # the revision alone. No row at all: a log without its head row (never migrated so).
        revision = int(found[0][0]) if found else 0
        return [CountRow._make(row[1:]) for row in found if row[1] is not None], revision

    def count(self) -> int:
        """How many conversations are stored, in every workspace."""
        with self._session():
            total = LeadCount.select(peewee.fn.COALESCE(peewee.fn.SUM(LeadCount.n), 0)).scalar()
        return int(total)

    def rebuild_counts(self) -> None:
        """Count every conversation afresh (after a bulk copy)."""
        c, n = ConversationRow, LeadCount
        grouped = c.select(
            c.workspace_id, c.lead_temperature, c.state,
            peewee.fn.COUNT(c.id), peewee.fn.SUM(c.lead_score),
        ).group_by(c.workspace_id, c.lead_temperature, c.state)
        with self._session(), self._write_transaction():
            n.delete().execute()
            n.insert_from(grouped, [n.workspace_id, n.lead_temperature, n.state, n.n,
                                    n.score_sum]).execute()


def _implements_ports(repo: Repository, tx: WriteTx) -> tuple[ports.Store, ports.WriteTx]:
    """Never called: mypy checks here that the repository and its transaction are what
    core's ports ask for."""
    return repo, tx
