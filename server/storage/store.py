"""Storage: the peewee models and every query the service makes, behind one small class."""

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import peewee
from playhouse.pool import MaxConnectionsExceeded

from server.core.domain import Lead, LeadFilter, Stats
from server.core.errors import Unavailable
from server.storage.counts import CountDeltas, stats_of, total_leads
from server.storage.database import LOCK_WAIT_MS, is_sqlite
from server.storage.models import ConversationRow, UpsertRequestRow, bind_models
from server.storage.statements import LEAD_COLUMNS, Statements

_LOGGER = logging.getLogger(__name__)

REQUEST_ID_TTL_US = 24 * 3600 * 1_000_000
_PRUNE_EVERY_S = 60.0
_INSERT_RACE_RETRIES = 3
_T = TypeVar("_T")


def _lead_values(lead: Lead) -> dict[str, object]:
    # A shallow dataclasses.asdict: its deep copy cost a tenth of an upsert.
    return {name: getattr(lead, name) for name in LEAD_COLUMNS}


def _lead_from_tuple(row: tuple) -> Lead:
    """A Lead from a statements.select_lead row: (id, *LEAD_COLUMNS)."""
    lead = Lead(*row[1:])
    return dataclasses.replace(lead, pain_points=tuple(json.loads(lead.pain_points)))


def _lead_from_row(row: ConversationRow) -> Lead:
    values = {name: getattr(row, name) for name in LEAD_COLUMNS}
    values["pain_points"] = tuple(json.loads(row.pain_points))
    return Lead(**values)


def _row_values(lead: Lead) -> dict[str, object]:
    values = _lead_values(lead)
    values["pain_points"] = json.dumps(list(lead.pain_points), ensure_ascii=False)
    return values


def _lead_to_json(lead: Lead) -> str:
    return json.dumps(_lead_values(lead), ensure_ascii=False)


def _lead_from_json(text: str) -> Lead:
    values = json.loads(text)
    values["pain_points"] = tuple(values["pain_points"])
    return Lead(**values)


def _first_error(exc: BaseException) -> BaseException:
    """The error that started it. SQLite rolls a transaction back by itself on a full disk
    (and some I/O errors); peewee's ROLLBACK then fails with "no transaction is active", and
    that second error would hide the first."""
    first: BaseException | None = exc
    while first is not None and "no transaction is active" in str(first):
        first = first.__context__  # the driver's error, then the one before it
    return first or exc


def _is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL, or PostgreSQL's disk_full (SQLSTATE 53100) / ENOSPC."""
    return (getattr(exc.__context__, "sqlstate", None) == "53100"  # psycopg's DiskFull
            or "database or disk is full" in str(exc) or "No space left on device" in str(exc))


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """Turn driver failures (locked, busy, disk full, connection lost) into Unavailable."""
    try:
        yield
    except MaxConnectionsExceeded as exc:
        raise Unavailable("every database connection is busy; retry shortly") from exc
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        first = _first_error(exc)
        if _is_disk_full(first):
            _LOGGER.error("database disk full: %s", first)
            raise Unavailable("the database's disk is full: writes fail until space is freed "
                              "where the database lives; reads still work") from exc
        _LOGGER.warning("database unavailable: %s", first)
        raise Unavailable(f"database unavailable: {first}; retry shortly") from exc
    except peewee.IntegrityError:
        raise
    except peewee.DatabaseError as exc:
        _LOGGER.warning("database error: %s", exc)
        raise Unavailable(f"database error: {exc}; retry shortly") from exc


def _where_all(query: peewee.ModelSelect, conditions: list) -> peewee.ModelSelect:
    """query.where(*conditions), which peewee refuses for an empty list."""
    return query.where(*conditions) if conditions else query


def _now_us() -> int:
    return time.time_ns() // 1000


class Store:
    """Reads and writes conversations in one peewee database."""

    def __init__(self, db: peewee.Database, clock: Callable[[], int] = _now_us):
        self._db = db
        self._clock = clock
        self._last_prune = 0.0
        self._writers = threading.Lock()
        bind_models(db)
        self._sql = Statements(db)

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """A pooled connection for the duration, with driver errors mapped to Unavailable."""
        with _database_errors(), self._db.connection_context():
            yield

    def close(self) -> None:
        """Close every connection of every thread (the server has stopped calling)."""
        close_all = getattr(self._db, "close_all", self._db.close)
        close_all()

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
        if not self._writers.acquire(timeout=LOCK_WAIT_MS / 1000):
            raise Unavailable("the database is busy with other writes; retry shortly")
        try:
            with self._db.atomic("IMMEDIATE"):
                yield
        finally:
            self._writers.release()

    def get(self, workspace_id: str, phone: str) -> Lead | None:
        with self._session():
            row = self._sql.select_lead.run(
                self._db, {"workspace_id": workspace_id, "contact_phone": phone}).fetchone()
        return _lead_from_tuple(row) if row else None

    def upsert(
        self,
        workspace_id: str,
        phone: str,
        request_id: str,
        apply: Callable[[Lead | None, int], Lead],
    ) -> Lead:
        """Write apply(stored lead or None, now) atomically and return it.

        With a request_id seen for this lead in the last 24 hours, return what that
        request left and write nothing.
        """
        return self._write(lambda: self._upsert_locked(workspace_id, phone, request_id, apply))

    def _write(self, locked: Callable[[], _T]) -> _T:
        """Run `locked` in one write transaction, again if a concurrent first insert won."""
        for attempt in range(_INSERT_RACE_RETRIES):
            try:
                with self._session(), self._write_transaction():
                    return locked()
            except peewee.IntegrityError as exc:
                # Only without SQLite's up-front lock: two first writes of one lead (or one
                # request_id) raced; the retry sees the winner's row.
                if attempt == _INSERT_RACE_RETRIES - 1:
                    raise Unavailable(f"write conflict, retry: {exc}") from exc
        raise AssertionError("unreachable")

    def _upsert_locked(self, workspace_id, phone, request_id, apply) -> Lead:  # type: ignore[no-untyped-def]
        now = self._clock()
        key = {"workspace_id": workspace_id, "contact_phone": phone}
        # Lock the lead first: two retries of one request_id then run one after the other,
        # and the second finds the first's record (on PostgreSQL; SQLite locks up front).
        row = self._sql.lock_lead.run(self._db, key).fetchone()
        if request_id:
            seen = self._sql.select_request.run(self._db, {
                **key, "request_id": request_id, "since": now - REQUEST_ID_TTL_US,
            }).fetchone()
            if seen:
                return _lead_from_json(seen[0])
        old = _lead_from_tuple(row) if row else None
        lead = apply(old, now)
        if row is None:
            self._sql.insert_lead.run(self._db, _row_values(lead))
        else:
            self._sql.update_lead.run(self._db, {**_row_values(lead), "id": row[0]})
        deltas = CountDeltas()
        deltas.change(old, lead)
        deltas.apply(self._add_to_count)
        if request_id:
            self._prune_requests(now)
            self._sql.save_request.run(self._db, {
                **key, "request_id": request_id, "created_at": now,
                "result": _lead_to_json(lead),
            })
        return lead

    def _add_to_count(self, values: dict[str, object]) -> None:
        self._sql.add_to_count.run(self._db, values)

    def _prune_requests(self, now: int) -> None:
        # Expired request ids go at most once a minute, inside a write that holds the lock.
        if time.monotonic() - self._last_prune < _PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        gone = UpsertRequestRow.delete().where(
            UpsertRequestRow.created_at <= now - REQUEST_ID_TTL_US
        ).execute()
        if gone:
            _LOGGER.info("pruned %d expired request ids", gone)

    def delete(self, workspace_id: str, phone: str) -> bool:
        """Erase the lead and every request snapshot of it; True if it existed."""
        with self._session(), self._write_transaction():
            UpsertRequestRow.delete().where(
                (UpsertRequestRow.workspace_id == workspace_id)
                & (UpsertRequestRow.contact_phone == phone)
            ).execute()
            row = self._sql.lock_lead.run(
                self._db, {"workspace_id": workspace_id, "contact_phone": phone}).fetchone()
            if row is None:
                return False
            ConversationRow.delete().where(ConversationRow.id == row[0]).execute()
            deltas = CountDeltas()
            deltas.change(_lead_from_tuple(row), None)
            deltas.apply(self._add_to_count)
        return True

    @staticmethod
    def _where(lead_filter: LeadFilter) -> list[peewee.Expression]:
        """The filter as conditions that peewee's where(*conditions) joins with AND."""
        clauses: list[peewee.Expression] = []
        if lead_filter.workspace_id is not None:
            clauses.append(ConversationRow.workspace_id == lead_filter.workspace_id)
        if lead_filter.temperature is not None:
            clauses.append(ConversationRow.lead_temperature == lead_filter.temperature)
        if lead_filter.state is not None:
            clauses.append(ConversationRow.state == lead_filter.state)
        if lead_filter.min_score is not None:
            clauses.append(ConversationRow.lead_score >= lead_filter.min_score)
        return clauses

    def page(
        self,
        lead_filter: LeadFilter,
        order_key: str,
        after: tuple[int, str, str] | None,
        limit: int,
    ) -> list[Lead]:
        """Return up to `limit` leads ordered by `order_key` descending, then contact_phone
        and workspace_id descending, strictly after the position `after`."""
        key = getattr(ConversationRow, order_key)
        position = peewee.Tuple(key, ConversationRow.contact_phone, ConversationRow.workspace_id)
        where = self._where(lead_filter)
        if after is not None:
            where.append(position < peewee.Tuple(*after))
        columns = [ConversationRow.id, *(getattr(ConversationRow, c) for c in LEAD_COLUMNS)]
        query = (
            _where_all(ConversationRow.select(*columns), where)
            .order_by(key.desc(), ConversationRow.contact_phone.desc(),
                      ConversationRow.workspace_id.desc())
            .limit(limit)
            .tuples()  # a model object per row cost more than the query
        )
        with self._session():
            return [_lead_from_tuple(row) for row in query]

    def count(self) -> int:
        """How many conversations are stored, in every workspace."""
        with self._session():
            return total_leads()

    def stats(self, workspace_id: str | None) -> Stats:
        """Counts by temperature and state and the mean score, of one workspace or all."""
        with self._session():
            if workspace_id is None:
                rows = self._sql.counts_of_all.run(self._db, {})
            else:
                rows = self._sql.counts_of_workspace.run(self._db, {"workspace_id": workspace_id})
            return stats_of(rows.fetchall())

    # Under SQLite's oldest limit of 999 variables per statement: 2 per key, 16 per row.
    _KEYS_PER_QUERY = 400
    _ROWS_PER_INSERT = 50

    def merge_many(
        self, leads: list[Lead], merge: Callable[[Lead | None, Lead], Lead | None]
    ) -> list[tuple[bool, bool]]:
        """For each lead in order, write merge(stored lead or None, lead) unless it is None.

        One write transaction covers the batch, so a failure leaves none of it written and
        the caller can send the batch again; a later lead with the same key as an earlier
        one sees the earlier one's write. Returns (existed, written) per lead.
        """
        return self._write(lambda: self._merge_locked(leads, merge))

    def _merge_locked(  # type: ignore[no-untyped-def]
        self, leads: list[Lead], merge
    ) -> list[tuple[bool, bool]]:
        # The batch's stored leads come in a few queries (locked on PostgreSQL), the merges
        # run in memory, and only what changed is written: importing a batch that is already
        # held costs one read, not one query per lead.
        keys = list({(lead.workspace_id, lead.contact_phone) for lead in leads})
        key = peewee.Tuple(ConversationRow.workspace_id, ConversationRow.contact_phone)
        rows: dict[tuple[str, str], ConversationRow] = {}
        for part in peewee.chunked(keys, self._KEYS_PER_QUERY):
            query = ConversationRow.select().where(key.in_(part))
            if self._db.for_update:
                query = query.for_update()
            rows.update({(row.workspace_id, row.contact_phone): row for row in query})
        current = {k: _lead_from_row(row) for k, row in rows.items()}
        changed: set[tuple[str, str]] = set()
        outcomes = []
        for lead in leads:
            k = (lead.workspace_id, lead.contact_phone)
            merged = merge(current.get(k), lead)
            outcomes.append((k in current, merged is not None))
            if merged is not None:
                current[k] = merged
                changed.add(k)
        deltas = CountDeltas()
        for k in changed:
            deltas.change(_lead_from_row(rows[k]) if k in rows else None, current[k])
        deltas.apply(self._add_to_count)
        created = [_row_values(current[k]) for k in changed - rows.keys()]
        for part in peewee.chunked(created, self._ROWS_PER_INSERT):
            ConversationRow.insert_many(part).execute()
        for k in changed & rows.keys():
            ConversationRow.update(**_row_values(current[k])).where(
                ConversationRow.id == rows[k].id
            ).execute()
        return outcomes
