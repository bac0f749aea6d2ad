"""Admin commands of sarah-server: `migrate`, `copy-data` between databases, `hash-key`."""

import argparse
import logging
import os
import sys

import peewee

from server.api.auth import hash_key
from server.config import add_database_args
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.models import ConversationRow, UpsertRequestRow
from server.storage.repository import Repository

_BATCH = 1000


def _migrate(args: argparse.Namespace) -> int:
    before, after = migrate(open_database(args.database_url, pool_size=1))
    print(f"schema at version {after}" + (f" (was {before})" if before != after else
                                           " (already current)"))
    return 0


def _copy_table(source: peewee.Database, target: peewee.Database, model, on_conflict) -> int:  # type: ignore[no-untyped-def]
    """Copy every row of `model`'s table in id order, a batch at a time (constant memory)."""
    columns = [f for f in model._meta.sorted_fields if f.name != "id"]
    copied, last_id = 0, 0
    while True:
        with source.bind_ctx([model]):
            batch = list(model.select(model.id, *columns).where(model.id > last_id)
                         .order_by(model.id).limit(_BATCH).dicts())
        if not batch:
            return copied
        last_id = batch[-1].pop("id")
        for row in batch:
            row.pop("id", None)
        with target.bind_ctx([model]), target.atomic():
            on_conflict(model.insert_many(batch)).execute()
        copied += len(batch)


def _copy_data(args: argparse.Namespace) -> int:
    source = open_database(args.source, pool_size=1)
    target = open_database(args.database_url, pool_size=1)
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
    print(f"copied {copied} conversations and {request_ids} request ids "
          f"from {args.source} to {args.database_url}")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("sarah-server hash-key: give the key as an argument or on standard input",
              file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def main(argv: list[str]) -> int:
    """Run the admin command named by argv[0]."""
    env = dict(os.environ)
    parser = argparse.ArgumentParser(prog="sarah-server")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_parser = commands.add_parser(
        "migrate", help="bring the database schema up to date, then exit")
    add_database_args(migrate_parser, env)
    migrate_parser.set_defaults(run=_migrate)
    copy_parser = commands.add_parser(
        "copy-data", help="copy every conversation from --source into --database-url "
                          "(e.g. a SQLite file into PostgreSQL); safe to run again")
    copy_parser.add_argument("--source", required=True, help="URL of the database to read")
    add_database_args(copy_parser, env)
    copy_parser.set_defaults(run=_copy_data)
    hash_parser = commands.add_parser(
        "hash-key", help="print the sha256: form of an API key, for the keys file")
    hash_parser.add_argument("key", nargs="?", help="the key (default: read standard input)")
    hash_parser.set_defaults(run=_hash_key)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return args.run(args)
    except (ValueError, peewee.PeeweeException) as exc:
        print(f"sarah-server {args.command}: {exc}", file=sys.stderr)
        return 1


ADMIN_COMMANDS = ("migrate", "copy-data", "hash-key")
