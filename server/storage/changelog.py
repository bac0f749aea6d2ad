"""The change log: appending a write's events in its own transaction, and reading them.

Revisions in commit order, without gaps
---------------------------------------
A watcher reads "every event after revision N", then "after M", and must never lose one.
A sequence (SERIAL) would not do on PostgreSQL: it hands out numbers when a row is
inserted, not when its transaction commits, so with two writers revision 41 can become
visible after 42 — a reader that saw 42 has skipped 41 for good — and a rolled-back write
leaves a hole that looks the same as a late commit.

Instead one row, `log_head`, holds the latest revision handed out. A write takes its
revisions with `UPDATE log_head SET revision = revision + n ... RETURNING revision`
as the LAST statements of its transaction, after everything it could fail on. The UPDATE
locks that row until commit or rollback, so writers pass this point one at a time, and
the one that took 41 commits (or rolls back, returning 41 to the counter) before the next
can take 42. Hence revisions are committed in increasing order, with no gaps: whoever
sees revision r sees every revision below it. The serialised part is only the UPDATE, the
event INSERT and the COMMIT. SQLite has one writer at a time anyway (BEGIN IMMEDIATE), so
the same statements give the same guarantee across its processes.

With group commit (group_commit.py) one transaction holds several writes: the first write
that logs takes the row's lock for the whole group, the next ones continue from its
revision, and a write that fails after logging takes the group's transaction down with its
revisions (transactions.py runs the group again without it), so the next write takes them:
still no gaps. The counts and activity rows every write changes are written after all of
the group's writes (totals.write_totals), so two replicas' groups take those rows
after this one, in one order.

On PostgreSQL the write also runs `pg_notify('sarah_log', head)`; the notification is
delivered at commit (never for a rollback), which wakes every replica's tailer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import peewee

from server.core.changes import Change, Event
from server.core.domain import Lead, LeadKey
from server.storage.database import is_sqlite
from server.storage.lead_json import lead_from_json, lead_to_json
from server.storage.models import LeadEventRow
from server.storage.statements import Statements

CHANNEL = "sarah_log"


def append(db: peewee.Database, sql: Statements, changes: list[Change],
           lead_ids: list[int], at: int,
           json_of: Callable[[Lead], str] = lead_to_json) -> list[Event]:
    """Give `changes` the next revisions and write them (statements.py), each under the
    conversation row of `lead_ids` whose story it is, its lead as `json_of` spells it;
    call it last in the write's transaction (it holds log_head's row lock from here to
    commit)."""
    if not changes:
        return []
    head = sql.advance_head.run(db, {"n": len(changes)}).fetchone()[0]
    first = int(head) - len(changes) + 1
    events = [Event(first + i, c.kind, c.lead, c.changed, at) for i, c in enumerate(changes)]
    sql.insert_event.run_many(db, [_row(event, lead_id, json_of)
                               for event, lead_id in zip(events, lead_ids, strict=True)])
    if not is_sqlite(db):
        db.execute_sql("SELECT pg_notify(%s, %s)", (CHANNEL, str(head)))
    return events


def _row(event: Event, lead_id: int, json_of: Callable[[Lead], str]) -> dict[str, Any]:
    assert event.lead is not None
    return {"revision": event.revision, "workspace_id": event.lead.workspace_id,
            "kind": event.kind, "contact_phone": event.lead.contact_phone,
            "business_scoped_user_id": event.lead.business_scoped_user_id,
            "conversation": json_of(event.lead), "changed": json.dumps(list(event.changed)),
            "at": event.at, "lead_id": lead_id}


def _events(query: peewee.ModelSelect[LeadEventRow]) -> list[Event]:
    e = LeadEventRow
    rows: list[tuple[Any, ...]] = list(cast(Any, query.select(
        e.revision, e.kind, e.conversation, e.changed, e.at).tuples()))
    return [Event(int(rev), kind, lead_from_json(text), tuple(json.loads(changed)), int(at))
            for rev, kind, text, changed, at in rows]


def head(db: peewee.Database) -> tuple[int, int]:
    """(latest revision committed, latest revision retention removed)."""
    revision, pruned_through = db.execute_sql(
        'SELECT "revision", "pruned_through" FROM "log_head" WHERE "id" = 1').fetchone()
    return int(revision), int(pruned_through)


def after(db: peewee.Database, revision: int, limit: int) -> list[Event]:
    """Up to `limit` events after `revision`, in revision order."""
    e = LeadEventRow
    return _events(e.select().where(e.revision > revision).order_by(e.revision).limit(limit))


def _newest_first(query: peewee.ModelSelect[LeadEventRow], before: int | None,
                  limit: int) -> list[Event]:
    e = LeadEventRow
    if before is not None:
        query = query.where(e.revision < before)
    return _events(query.order_by(e.revision.desc()).limit(limit))


def of_lead(db: peewee.Database, lead_id: int, before: int | None, limit: int) -> list[Event]:
    """Up to `limit` events of one conversation row before revision `before` (None: the
    newest), newest first."""
    e = LeadEventRow
    return _newest_first(e.select().where(e.lead_id == lead_id), before, limit)


def carrying(db: peewee.Database, key: LeadKey, before: int | None, limit: int) -> list[Event]:
    """Up to `limit` events that carried either key of `key`, before revision `before`,
    newest first: a query per key along its index, merged."""
    e = LeadEventRow
    found: dict[int, Event] = {}
    for column, value in ((e.contact_phone, key.contact_phone),
                          (e.business_scoped_user_id, key.business_scoped_user_id)):
        if value:
            query = e.select().where((e.workspace_id == key.workspace_id) & (column == value))
            found.update((event.revision, event) for event in _newest_first(query, before, limit))
    return sorted(found.values(), key=lambda event: -event.revision)[:limit]


def move(db: peewee.Database, from_lead: int, to_lead: int) -> None:
    """Give the events of one conversation row to another (a merge's absorbed half to the
    survivor): the history follows the person."""
    e = LeadEventRow
    e.update(lead_id=to_lead).where(e.lead_id == from_lead).execute()


def erase(db: peewee.Database, lead_id: int, key: LeadKey) -> None:
    """Remove the events of a lead (they carry personal data), by its row, which keeps them
    across identity changes and merges, and the ones logged before rows were recorded
    (lead_id 0) by either of its keys: its deleted event, written after this, is all that
    stays."""
    e = LeadEventRow
    e.delete().where(e.lead_id == lead_id).execute()
    for column, value in ((e.contact_phone, key.contact_phone),
                          (e.business_scoped_user_id, key.business_scoped_user_id)):
        if value:
            e.delete().where((e.workspace_id == key.workspace_id) & (column == value)
                             & (e.lead_id == 0)).execute()

