"""`sarah-server copy-data`: every conversation, request record, logged event and activity
count from one database into another (a SQLite file into PostgreSQL, say), safe to run
again.

Conversations merge into what the target holds (the newer one wins). The change log
cannot merge: its revisions are carried over unchanged, so that a watcher resumes on the
target where it left off on the source, and two logs would claim the same revisions. So
the history (events, log_head and activity) goes only into a target that has none of its
own: none at all, or an earlier copy of this source's, which is replaced whole (a second
run repeats no activity count, and drops what the source erased since). Anything else is
refused before a row is written.

Everything is read in one snapshot of the source, a batch at a time (constant memory),
so the events, their leads and the counts agree even while a server writes to it."""

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import peewee

from server.storage import changelog
from server.storage.database import open_database, snapshot
from server.storage.migrations import migrate
from server.storage.models import (
    ActivityBucket,
    ConversationRow,
    LeadEventRow,
    LogHead,
    UpsertRequestRow,
)
from server.storage.repository import Repository

_BATCH = 1000
# Under SQLite's oldest limit of 999 variables per statement (9 per event, 2 per key).
_ROWS_PER_INSERT = 100
_KEYS_PER_QUERY = 400
_Row = dict[str, Any]


class Copied(NamedTuple):
    conversations: int
    request_ids: int
    events: int
    activity_rows: int


def copy_data(source_url: str, target_url: str) -> Copied:
    """Copy into `target_url` (migrated first); what was copied. ValueError, with nothing
    written, if the target has a history of its own (see above)."""
    source = open_database(source_url, pool_size=1)
    target = open_database(target_url, pool_size=1)
    migrate(target)
    with snapshot(source):
        head = changelog.head(source)
        has_history = head != (0, 0) or _any(source, ActivityBucket)
        if has_history and not _history_is_a_copy(source, target, head):
            raise ValueError(
                f"the target already has a change log or activity of its own (revision "
                f"{changelog.head(target)[0]}): copy-data carries the source's revisions, so "
                "it copies them only into a database without history, or into an earlier "
                "copy of this source; copy into a new database")
        copied = sum(_write(target, ConversationRow, _write_conversations, batch)
                     for batch in _batches(source, ConversationRow))
        request_ids = sum(_write(target, UpsertRequestRow, _write_ignoring_copies, batch)
                          for batch in _batches(source, UpsertRequestRow))
        events, activity_rows = _copy_history(source, target, head) if has_history else (0, 0)
    Repository(target).rebuild_counts()
    return Copied(copied, request_ids, events, activity_rows)


def _write(target: peewee.Database, model: type[peewee.Model],
           write_batch: Callable[[list[_Row]], None], batch: list[_Row]) -> int:
    """Write one batch of `model` rows into `target`, in its own transaction."""
    with target.bind_ctx([model]), target.atomic():
        write_batch(batch)
    return len(batch)


def _write_ignoring_copies(rows: list[_Row]) -> None:
    """Insert request records; one already there (an earlier run's) stays."""
    UpsertRequestRow.insert_many(rows).on_conflict_ignore().execute()


def _write_conversations(rows: list[_Row]) -> None:
    """Insert conversations; one a lead of the target already holds (by its phone, or for
    a lead without one, by its BSUID) is replaced only if the source's is newer, so
    running the copy again (or after the source moved on) changes only what is newer."""
    c = ConversationRow
    for column, keyed in ((c.contact_phone, [r for r in rows if r["contact_phone"]]),
                          (c.business_scoped_user_id,
                           [r for r in rows if not r["contact_phone"]])):
        if keyed:
            c.insert_many(keyed).on_conflict(
                conflict_target=[c.workspace_id, column],
                # The partial unique index of that key, its condition written out: SQLite
                # matches an index by the text, and a parameter never matches.
                conflict_where=(column != peewee.SQL("''")),
                preserve=[f for f in c._meta.sorted_fields if f.name != "id"],
                where=(c.updated_at < peewee.EXCLUDED.updated_at),
            ).execute()


def _batches(db: peewee.Database, model: type[peewee.Model]) -> Iterator[list[_Row]]:
    """Every row of `model`'s table in key order, a batch at a time (constant memory),
    without a surrogate `id` (the target gives its own)."""
    meta = model._meta
    primary_key: Any = meta.primary_key  # a field, or a CompositeKey of field names
    keys = [meta.fields[name] for name in getattr(primary_key, "field_names",
                                                  [primary_key.name])]
    surrogate = isinstance(primary_key, peewee.AutoField)
    last: list[Any] | None = None
    while True:
        with db.bind_ctx([model]):
            query = model.select(*meta.sorted_fields)
            if last is not None:
                query = query.where(peewee.Tuple(*keys) > peewee.Tuple(*last))
            # .dicts() makes each row a dict, which peewee's types do not follow.
            batch: list[_Row] = list(cast(Any, query.order_by(*keys).limit(_BATCH).dicts()))
        if not batch:
            return
        last = [batch[-1][key.name] for key in keys]
        if surrogate:
            for row in batch:
                del row["id"]
        yield batch


def _any(db: peewee.Database, model: type[peewee.Model]) -> bool:
    with db.bind_ctx([model]):
        return bool(model.select().limit(1).exists())


# What makes an event the same event in two databases (lead_id is each one's row id).
_EVENT_IDENTITY = [f for f in LeadEventRow._meta.sorted_fields if f.name != "lead_id"]


def _history_is_a_copy(source: peewee.Database, target: peewee.Database,
                       source_head: tuple[int, int]) -> bool:
    """Whether the target's history is none, or an earlier copy of the source's: its
    revision no later than the source's, and its newest event that the source still has
    (the source may have erased or pruned some since) the same event."""
    target_head = changelog.head(target)
    if target_head[0] > source_head[0]:
        return False
    e = LeadEventRow
    before: int | None = None
    while True:  # the target's events, newest first, until one the source still has
        with target.bind_ctx([e]):
            query = e.select(*_EVENT_IDENTITY).order_by(e.revision.desc()).limit(_BATCH)
            if before is not None:
                query = query.where(e.revision < before)
            ours = list(cast(Any, query.tuples()))
        if not ours:
            break
        with source.bind_ctx([e]):
            theirs = {row[0]: row for row in cast(Any, e.select(*_EVENT_IDENTITY).where(
                e.revision.in_([row[0] for row in ours])).tuples())}
        for row in ours:
            if row[0] in theirs:
                return bool(theirs[row[0]] == row)
        before = ours[-1][0]
    if before is not None:
        return False  # events, none of them the source's
    if target_head == (0, 0):
        return not _any(target, ActivityBucket)
    return target_head == source_head  # a copy of a source whose every event is gone


def _copy_history(source: peewee.Database, target: peewee.Database,
                  head: tuple[int, int]) -> tuple[int, int]:
    """Replace the target's history with the source's, in one transaction (a copy cut
    short leaves the history as it was); (events, activity rows) copied."""
    events = activity_rows = 0
    with target.bind_ctx([LeadEventRow, ActivityBucket, LogHead]), target.atomic():
        LeadEventRow.delete().execute()
        ActivityBucket.delete().execute()
        for batch in _batches(source, LeadEventRow):
            _map_leads(source, target, batch)
            for part in peewee.chunked(batch, _ROWS_PER_INSERT):
                LeadEventRow.insert_many(part).execute()
            events += len(batch)
        for batch in _batches(source, ActivityBucket):
            for part in peewee.chunked(batch, _ROWS_PER_INSERT):
                ActivityBucket.insert_many(part).execute()
            activity_rows += len(batch)
        LogHead.insert(id=1, revision=head[0], pruned_through=head[1]).on_conflict(
            conflict_target=[LogHead.id],
            preserve=[LogHead.revision, LogHead.pruned_through]).execute()
    return events, activity_rows


def _map_leads(source: peewee.Database, target: peewee.Database, events: list[_Row]) -> None:
    """Give each event the target's row id of its lead, found by the keys its source row
    holds as _write_conversations matched them (the phone, else the BSUID); 0 (none) for
    a lead the source no longer holds, such as the deleted event of an erased one."""
    c = ConversationRow
    wanted = sorted({event["lead_id"] for event in events if event["lead_id"]})
    keys: dict[int, tuple[str, str, str]] = {}
    for part in peewee.chunked(wanted, _KEYS_PER_QUERY):
        with source.bind_ctx([c]):
            keys.update((row[0], row[1:]) for row in cast(Any, c.select(
                c.id, c.workspace_id, c.contact_phone, c.business_scoped_user_id
            ).where(c.id.in_(part)).tuples()))
    by_key: dict[tuple[str, str, str], int] = {}
    for column, index in ((c.contact_phone, 1), (c.business_scoped_user_id, 2)):
        pairs = sorted({(k[0], k[index]) for k in keys.values() if k[index]
                        and (index == 1 or not k[1])})
        for chunk in peewee.chunked(pairs, _KEYS_PER_QUERY):
            with target.bind_ctx([c]):
                found = c.select(c.id, c.workspace_id, column).where(
                    peewee.Tuple(c.workspace_id, column).in_(chunk))
                by_key.update(((row[1], column.name, row[2]), row[0])
                              for row in cast(Any, found.tuples()))
    for event in events:
        key = keys.get(event["lead_id"])
        if key is None:
            event["lead_id"] = 0
        elif key[1]:
            event["lead_id"] = by_key.get((key[0], "contact_phone", key[1]), 0)
        else:
            event["lead_id"] = by_key.get((key[0], "business_scoped_user_id", key[2]), 0)
