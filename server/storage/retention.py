"""The SQL of housekeeping (core/housekeeping.py): what is past retention, and removing it
a small batch at a time.

Each batch is its own short write transaction, so writers never wait on one long DELETE.
Every replica runs housekeeping at once: on PostgreSQL a batch locks the rows it takes with
FOR UPDATE SKIP LOCKED, so two replicas take different rows, and a batch never waits on
rows a DeleteState is erasing (that erasure locks them in its own order: waiting here
could close a cycle, a deadlock that PostgreSQL resolves by failing one of the two).
SQLite has one writer at a time anyway.
"""

from typing import Any

import peewee

from server.core.domain import LeadKey
from server.storage.database import is_sqlite
from server.storage.models import ConversationRow, LeadEventRow, LogHead, UpsertRequestRow


def _take(db: peewee.Database, query: "peewee.ModelSelect[Any]") -> list[int]:
    """The ids `query` selects, locked for this transaction, skipping any row another
    transaction holds (PostgreSQL; SQLite's writer lock already covers them)."""
    if not is_sqlite(db):
        query = query.for_update(skip_locked=True)
    return [int(row[0]) for row in db.execute(query).fetchall()]


def newest_past(db: peewee.Database, at_up_to: int) -> int | None:
    """The revision of the newest event committed at or before `at_up_to` (by commit time,
    through the index on it), or None if there is none: retention removes every event up
    to it, so what stays is one unbroken run of revisions."""
    e = LeadEventRow
    found = (e.select(e.revision).where(e.at <= at_up_to)
             .order_by(e.at.desc(), e.revision.desc()).limit(1).scalar())
    return None if found is None else int(found)


def prune_events(db: peewee.Database, through: int, limit: int) -> int:
    """Remove up to `limit` of the oldest events at or below revision `through`, and raise
    log_head's pruned_through to the newest one removed (a watcher resuming below it gets
    OUT_OF_RANGE); how many went. Call it in a write transaction."""
    e = LeadEventRow
    oldest = e.select(e.revision).where(e.revision <= through).order_by(e.revision).limit(limit)
    if is_sqlite(db):
        # The one writer holds the lock: a range of the primary key, found and removed
        # by two statements, keeps it shortest.
        newest = db.execute(oldest.select_from(peewee.fn.MAX(oldest.c.revision))
                            ).fetchone()[0]
        if newest is None:
            return 0
        gone = int(e.delete().where(e.revision <= newest).execute())
    else:
        revisions = _take(db, oldest)
        if not revisions:
            return 0
        newest, gone = max(revisions), len(revisions)
        e.delete().where(e.revision.in_(revisions)).execute()
    greatest = peewee.fn.MAX if is_sqlite(db) else peewee.fn.GREATEST
    # Last in the transaction: the row lock on log_head serialises writers' commits.
    LogHead.update(pruned_through=greatest(LogHead.pruned_through, newest)
                   ).where(LogHead.id == 1).execute()
    return gone


def prune_requests(db: peewee.Database, created_up_to: int, limit: int) -> int:
    """Forget up to `limit` request records saved at or before `created_up_to`; how many
    went. Call it in a write transaction."""
    r = UpsertRequestRow
    ids = _take(db, r.select(r.id).where(r.created_at <= created_up_to).order_by(r.id)
                .limit(limit))
    if ids:
        r.delete().where(r.id.in_(ids)).execute()
    return len(ids)


def inactive(db: peewee.Database, last_message_before: int, limit: int) -> list[LeadKey]:
    """The keys of up to `limit` leads whose last message is older than
    `last_message_before`, the longest silent first (through the last_message_at index)."""
    c = ConversationRow
    query = (c.select(c.workspace_id, c.contact_phone, c.business_scoped_user_id)
             .where(c.last_message_at < last_message_before)
             .order_by(c.last_message_at).limit(limit))
    return [LeadKey(*row) for row in db.execute(query).fetchall()]
