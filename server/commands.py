"""Admin commands of sarah-server: `migrate`, `copy-data` between databases, `backup`,
`restore`, `hash-key`."""

import argparse
import os
import sys
from pathlib import Path

from server.api.auth import hash_key
from server.config import add_database_args
from server.logs import setup_logging
from server.storage.backup import DEFAULT_PAGES, backup, restore
from server.storage.copying import copy_data
from server.storage.database import open_database, redact_url, without_secrets
from server.storage.errors import DatabaseError
from server.storage.migrations import LATEST, migrate


def _migrate(args: argparse.Namespace) -> int:
    before, after = migrate(open_database(args.database_url, pool_size=1))
    print(f"schema at version {after}" + (f" (was {before})" if before != after else
                                           " (already current)"))
    return 0


def _copy_data(args: argparse.Namespace) -> int:
    done = copy_data(args.source, args.database_url)
    print(f"copied {done.conversations} conversations, {done.request_ids} request ids, "
          f"{done.events} events and {done.activity_rows} activity rows "
          f"from {redact_url(args.source)} to {redact_url(args.database_url)}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    done = backup(args.database_url, Path(args.path), force=args.force, pages=args.pages)
    print(f"backed up {done.leads} leads (schema version {done.version}, "
          f"{done.size / 2**20:.1f} MiB) to {done.path}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    done, target = restore(args.database_url, Path(args.path))
    print(f"restored {done.leads} leads (schema version {done.version}) from {done.path} "
          f"into {target}")
    if done.version < LATEST:
        print(f"the server brings it from schema version {done.version} to {LATEST} when it "
              "starts (or run `sarah-server migrate`)")
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
        "copy-data", help="copy every conversation, its history and the activity counts "
                          "from --source into --database-url (e.g. a SQLite file into "
                          "PostgreSQL); safe to run again")
    copy_parser.add_argument("--source", required=True, help="URL of the database to read")
    add_database_args(copy_parser, env)
    copy_parser.set_defaults(run=_copy_data)
    backup_parser = commands.add_parser(
        "backup", help="copy the live SQLite database to PATH while the server keeps "
                       "writing (PostgreSQL: use pg_dump, see docs/operations.md)")
    backup_parser.add_argument("path", help="the backup file to write")
    backup_parser.add_argument("--force", action="store_true",
                               help="replace PATH if it exists (default: refuse)")
    backup_parser.add_argument("--pages", type=int, default=DEFAULT_PAGES,
                               help="database pages copied per step "
                                    f"(default {DEFAULT_PAGES})")
    add_database_args(backup_parser, env)
    backup_parser.set_defaults(run=_backup)
    restore_parser = commands.add_parser(
        "restore", help="make the backup at PATH the SQLite database; refused while a "
                        "server runs on it (PostgreSQL: use pg_restore, see docs/operations.md)")
    restore_parser.add_argument("path", help="a file written by `sarah-server backup`")
    add_database_args(restore_parser, env)
    restore_parser.set_defaults(run=_restore)
    hash_parser = commands.add_parser(
        "hash-key", help="print the sha256: form of an API key, for the keys file")
    hash_parser.add_argument("key", nargs="?", help="the key (default: read standard input)")
    hash_parser.set_defaults(run=_hash_key)
    args = parser.parse_args(argv)
    urls = [url for url in (getattr(args, "database_url", ""), getattr(args, "source", ""))
            if url]
    setup_logging("text", urls)
    try:
        code: int = args.run(args)
        return code
    except (ValueError, OSError, DatabaseError) as exc:
        # A driver's error may quote a URL whole.
        print(f"sarah-server {args.command}: {without_secrets(str(exc), *urls)}",
              file=sys.stderr)
        return 1


ADMIN_COMMANDS = ("migrate", "copy-data", "backup", "restore", "hash-key")
