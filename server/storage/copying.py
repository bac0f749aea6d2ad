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
    conversation_key = [ConversationRow.workspace_id, ConversationRow.contact_phone]
    copied = _copy_table(
        source, target, ConversationRow,
        # The newer conversation wins, so running the copy again (or after the source
        # moved on) changes only what is newer in the source.
        lambda q: q.on_conflict(
            conflict_target=conversation_key,
            preserve=[f for f in ConversationRow._meta.sorted_fields if f.name != "id"],
            where=(ConversationRow.updated_at < peewee.EXCLUDED.updated_at),
        ),
    )
    request_ids = _copy_table(source, target, UpsertRequestRow, lambda q: q.on_conflict_ignore())
    Repository(target).rebuild_counts()
    return copied, request_ids


def _copy_table(source: peewee.Database, target: peewee.Database, model: type[peewee.Model],
                on_conflict: Callable[[peewee.Insert], peewee.Insert]) -> int:
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
            on_conflict(model.insert_many(batch)).execute()
        copied += len(batch)
