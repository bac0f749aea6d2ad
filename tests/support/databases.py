"""Both test databases: emptying them between tests, raw access, and databases left at an
older schema. The suite runs on SQLite and on PostgreSQL; the PostgreSQL server itself is
harness/postgres.py's."""

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import peewee
import psycopg
import pytest

from harness.postgres import fresh_postgres_database
from server.storage import migrations
from server.storage.database import open_database
from server.storage.migrations import migrate


def is_postgres(url: str) -> bool:
    return url.startswith(("postgres://", "postgresql://"))


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def empty_tables(url: str) -> None:
    """Delete every row of every table but the schema's version, keeping the schema; the
    change log's head row goes back to what the migration seeds, as on a fresh database."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [name for (name,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'schema_migrations'")]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))
        if "log_head" in tables:
            conn.execute('INSERT INTO "log_head" ("id", "revision", "pruned_through") '
                         "VALUES (1, 0, 0)")


def query(url: str, sql: str) -> list[tuple]:
    """Run one read-only SQL statement on the database of `url`."""
    if is_postgres(url):
        with psycopg.connect(url) as conn:
            return conn.execute(sql).fetchall()
    conn = sqlite3.connect(_sqlite_path(url))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@contextlib.contextmanager
def write_lock(url: str) -> Iterator[object]:
    """Hold the lock a writer needs until the block ends; yields an object with release()."""
    if is_postgres(url):
        conn = psycopg.connect(url)
        conn.execute("LOCK TABLE conversation IN EXCLUSIVE MODE")  # reads go on, writes wait
    else:
        conn = sqlite3.connect(_sqlite_path(url), isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
    holder = _Held(conn)
    try:
        yield holder
    finally:
        holder.release()
        conn.close()


class _Held:
    def __init__(self, conn) -> None:
        self._conn = conn
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._conn.rollback()


def new_database_url(backend: str, workdir: Path, request) -> str:
    """An empty database of its own on `backend` ("sqlite" or "postgresql"), for
    module-scoped stacks and migration tests; `request` reaches the session's server."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'sarah.db'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_server_url"))


def open_at_schema(url: str, version: int) -> peewee.Database:
    """The database at `url` with only the first `version` migrations applied, as a server
    of that schema left it: for the later migrations to be tried on its rows."""
    db = open_database(url)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:version])
        migrate(db)
    return db
