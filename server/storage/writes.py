"""The write operations of one transaction (WriteTx), on the rows it found and locked.

Which operations a use case runs, in which order and why, is the use case's business
(core/service.py); transactions.py runs it in a transaction. Some operations only note
what to write: the count and activity changes, which totals.py writes at the
transaction's end.
"""

import hashlib
from collections.abc import Iterable
from typing import Any, cast

import peewee

from server.core.activity import ActivityChange, ActivityDeltas
from server.core.changes import DELETED, Change, Event
from server.core.counts import CountChange, CountDeltas
from server.core.domain import Lead, LeadKey
from server.core.identity import Holders
from server.storage import changelog, retention
from server.storage.database import is_sqlite
from server.storage.lead_json import lead_from_json, lead_to_json
from server.storage.lead_rows import (
    RowKey,
    lead_columns,
    lead_from_tuple,
    row_key,
    row_values,
    tuples,
)
from server.storage.models import ConversationRow, UpsertRequestRow
from server.storage.statements import Statements

# Under SQLite's oldest limit of 999 variables per statement: 2 per key, 16 per row.
_KEYS_PER_QUERY = 400
_ROWS_PER_INSERT = 50


def advisory_key(workspace_id: str, kind: str, value: str) -> int:
    """A signed 64-bit number standing for one key of one workspace."""
    digest = hashlib.blake2b(f"{workspace_id}\x00{kind}\x00{value}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _key_parts(key: LeadKey) -> list[tuple[str, str]]:
    parts = [("phone", key.contact_phone), ("bsuid", key.business_scoped_user_id)]
    return [(kind, value) for kind, value in parts if value]


class WriteTx:
    """The operations of one write transaction. A lead is updated or deleted by the row
    that lock_holders or lock_leads found for its key in this transaction."""

    def __init__(self, db: peewee.Database, sql: Statements):
        self._db = db
        self._sql = sql
        self._row_ids: dict[RowKey, int] = {}
        # The row whose story the deleted event of each lead removed here belongs to: its
        # own, or a merge's survivor's.
        self._gone: dict[RowKey, int] = {}
        self.appended: list[Event] = []
        # Whether an operation has written (or tried to): a failure after that must take
        # its transaction down (transactions.py), one before it has nothing to undo.
        self.wrote = False
        self.count_changes: list[CountChange] = []
        # Each lead's JSON, encoded once per write: the request record and the change log
        # store the same text (by the lead object's identity; the lead is kept alive here).
        self._json: dict[int, tuple[Lead, str]] = {}
        self.activity_changes: list[ActivityChange] = []

    def json_of(self, lead: Lead) -> str:
        """`lead` as JSON (lead_json.py), encoded once in this transaction."""
        known = self._json.get(id(lead))
        if known is None or known[0] is not lead:
            known = self._json[id(lead)] = (lead, lead_to_json(lead))
        return known[1]

    def _found(self, row: tuple[Any, ...] | None) -> Lead | None:
        if row is None:
            return None
        lead = lead_from_tuple(row)
        self._row_ids[row_key(lead)] = row[0]
        return lead

    def lock_keys(self, keys: Iterable[LeadKey]) -> None:
        """Hold every key of `keys` until the transaction ends, even a key no lead holds
        yet: two writers naming a key (one person's two halves, or one new BSUID) then
        run one after the other. PostgreSQL takes advisory locks, in one sorted order (no
        deadlock); SQLite's one writer already holds everything."""
        if is_sqlite(self._db):
            return
        numbers = sorted({advisory_key(key.workspace_id, kind, value)
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
        found: dict[RowKey, Lead] = {}
        for column, values in ((by_phone, phones), (by_bsuid, bsuids)):
            for part in peewee.chunked(values, _KEYS_PER_QUERY):
                query = c.select(*lead_columns()).where(column.in_(part))
                if self._db.for_update:
                    query = query.for_update()
                for row in tuples(query):
                    lead = self._found(row)
                    assert lead is not None
                    found[row_key(lead)] = lead
        return list(found.values())

    def insert_lead(self, lead: Lead) -> None:
        self.wrote = True
        cursor = self._sql.insert_lead.run(self._db, row_values(lead))
        # PostgreSQL's INSERT returns the id (peewee adds RETURNING); SQLite's cursor has it.
        row_id = cursor.lastrowid if is_sqlite(self._db) else cursor.fetchone()[0]
        self._row_ids[row_key(lead)] = int(row_id)

    def insert_leads(self, leads: Iterable[Lead]) -> None:
        self.wrote = True
        c = ConversationRow
        rows = [row_values(lead) for lead in leads]
        for part in peewee.chunked(rows, _ROWS_PER_INSERT):
            inserted = c.insert_many(part).returning(
                c.id, c.workspace_id, c.contact_phone, c.business_scoped_user_id)
            for row_id, *key in cast(Any, inserted.tuples().execute()):
                self._row_ids[(key[0], key[1], key[2])] = int(row_id)

    def update_lead(self, lead: Lead, was: Lead | None = None) -> None:
        """Write `lead` over the row found in this transaction as `was` (by default, the
        row of `lead`'s own keys)."""
        self.wrote = True
        row_id = self._row_ids.pop(row_key(was or lead))
        self._row_ids[row_key(lead)] = row_id
        self._sql.update_lead.run(self._db, {**row_values(lead), "id": row_id})

    def delete_lead(self, lead: Lead) -> None:
        """Delete the row found in this transaction as `lead`."""
        self.wrote = True
        row_id = self._row_ids.pop(row_key(lead))
        self._gone[row_key(lead)] = row_id
        ConversationRow.delete().where(ConversationRow.id == row_id).execute()

    def move_history(self, half: Lead, into: Lead) -> None:
        """Give the events of `half`, deleted in this transaction as a merge's absorbed
        half, to the row of `into` (the survivor as written here), its deleted event too."""
        self.wrote = True
        survivor = self._row_ids[row_key(into)]
        changelog.move(self._db, self._gone[row_key(half)], survivor)
        self._gone[row_key(half)] = survivor

    def add_counts(self, deltas: CountDeltas) -> None:
        """Change the lead counts at the transaction's end (totals.py)."""
        self.count_changes.extend(deltas.changes())

    def add_activity(self, deltas: ActivityDeltas) -> None:
        """Add the write's activity to its quarter-hours' rows at the transaction's end."""
        self.activity_changes.extend(deltas.changes())

    def append_events(self, changes: list[Change], at: int) -> list[Event]:
        """Log the write's events with their revisions, each under the row of the lead it
        tells of; the use case calls it last (it serialises writers from here to commit:
        changelog.py says why)."""
        self.wrote = True
        lead_ids = [(self._gone if c.kind == DELETED else self._row_ids)[row_key(c.lead)]
                    for c in changes]
        events = changelog.append(self._db, self._sql, changes, lead_ids, at, self.json_of)
        self.appended.extend(events)
        return events

    def erase_events(self, lead: Lead) -> None:
        """Remove the logged events of `lead`, deleted in this transaction (erasure). Its
        deleted event, logged after this, belongs to no row (lead_id 0, found by its keys):
        SQLite hands the highest row id out again after that row is deleted, and the next
        new lead's history must not start with someone else's erasure."""
        self.wrote = True
        changelog.erase(self._db, self._gone[row_key(lead)], lead.key)
        self._gone[row_key(lead)] = 0

    def prune_events(self, through: int, limit: int) -> int:
        """Remove up to `limit` of the oldest events at or below revision `through` (and
        remember them as pruned); how many went."""
        self.wrote = True
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
        self.wrote = True
        self._sql.save_request.run(self._db, {
            "workspace_id": lead.workspace_id, "contact_phone": lead.contact_phone,
            "business_scoped_user_id": lead.business_scoped_user_id,
            "request_id": request_id, "created_at": created_at, "result": self.json_of(lead),
        })

    def prune_requests(self, created_up_to: int, limit: int) -> int:
        """Forget up to `limit` requests saved at or before `created_up_to`; how many went."""
        self.wrote = True
        return retention.prune_requests(self._db, created_up_to, limit)

    def delete_requests(self, key: LeadKey) -> None:
        """Forget every request saved under either key of `key`."""
        self.wrote = True
        r = UpsertRequestRow
        for column, value in ((r.contact_phone, key.contact_phone),
                              (r.business_scoped_user_id, key.business_scoped_user_id)):
            if value:
                r.delete().where((r.workspace_id == key.workspace_id)
                                 & (column == value)).execute()
