"""Admin commands of sarah-server: `migrate`, `copy-data` between databases, `hash-key`."""

import argparse
import os
import sys

from server.api.auth import hash_key
from server.config import add_database_args
from server.logs import setup_logging
from server.storage.copying import copy_data
from server.storage.database import open_database, redact_url, without_secrets
from server.storage.errors import DatabaseError
from server.storage.migrations import migrate


def _migrate(args: argparse.Namespace) -> int:
    before, after = migrate(open_database(args.database_url, pool_size=1))
    print(f"schema at version {after}" + (f" (was {before})" if before != after else
                                           " (already current)"))
    return 0


def _copy_data(args: argparse.Namespace) -> int:
    copied, request_ids = copy_data(args.source, args.database_url)
    print(f"copied {copied} conversations and {request_ids} request ids "
          f"from {redact_url(args.source)} to {redact_url(args.database_url)}")
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
    urls = [url for url in (getattr(args, "database_url", ""), getattr(args, "source", ""))
            if url]
    setup_logging("text", urls)
    try:
        code: int = args.run(args)
        return code
    except (ValueError, DatabaseError) as exc:
        # A driver's error may quote a URL whole.
        print(f"sarah-server {args.command}: {without_secrets(str(exc), *urls)}",
              file=sys.stderr)
        return 1


ADMIN_COMMANDS = ("migrate", "copy-data", "hash-key")
