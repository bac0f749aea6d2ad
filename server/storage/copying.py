"""`sarah-server copy-data`: every conversation and request record from one database into
another (a SQLite file into PostgreSQL, say), safe to run again."""

from collections.abc import Callable
from typing import Any, cast

import peewee

from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.models import ConversationRow, UpsertRequestRow
from server.storage.repository import Repository

_BATCH = 1000


def copy_data(source_url: str, target_url: str) -> tuple[int, int]:
    """Copy into `target_url` (migrated first); return (conversations, request ids) copied."""
    source = open_database(source_url, pool_size=1)
    target = open_database(target_url, pool_size=1)
    migrate(target)
    copied = _copy_table(source, target, ConversationRow, _write_conversations)
    request_ids = _copy_table(source, target, UpsertRequestRow,
                              lambda rows: UpsertRequestRow.insert_many(rows)
                              .on_conflict_ignore().execute())
    Repository(target).rebuild_counts()
    return copied, request_ids


def _write_conversations(rows: list[dict[str, Any]]) -> None:
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
                conflict_where=(column != ""),  # the partial unique index of that key
                preserve=[f for f in c._meta.sorted_fields if f.name != "id"],
                where=(c.updated_at < peewee.EXCLUDED.updated_at),
            ).execute()


def _copy_table(source: peewee.Database, target: peewee.Database, model: type[peewee.Model],
                write_batch: Callable[[list[dict[str, Any]]], object]) -> int:
    """Copy every row of `model`'s table in id order, a batch at a time (constant memory)."""
    row_id = model._meta.primary_key
    columns = [f for f in model._meta.sorted_fields if f.name != "id"]
    copied, last_id = 0, 0
    while True:
        with source.bind_ctx([model]):
            query = (model.select(row_id, *columns).where(row_id > last_id)
                     .order_by(row_id).limit(_BATCH))
            # .dicts() makes each row a dict, which peewee's types do not follow.
            batch: list[dict[str, Any]] = list(cast(Any, query.dicts()))
        if not batch:
            return copied
        last_id = batch[-1].pop("id")
        for row in batch:
            row.pop("id", None)
        with target.bind_ctx([model]), target.atomic():
            write_batch(batch)
        copied += len(batch)
