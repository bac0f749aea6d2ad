"""Fixtures: a real SarahService on a free loopback port, over SQLite and over PostgreSQL.

Every test that asks for `database_url` (directly or through `running`, `stub`,
`server_process`) runs twice: once on a SQLite file, once on a real PostgreSQL server.
"""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from harness.postgres import fresh_postgres_database, postgres_server
from harness.processes import ServerProcess
from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer
from tests.support.databases import empty_tables
from tests.support.helpers import Clock
from tests.support.servers import serving


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist's workers start with COLUMNS=80 and LINES=24 set, which rich honours as
    # a terminal's size: the `sarah` CLI would cut its tables, where the tests expect what
    # it prints into a pipe (client/render.py), as in a run without workers.
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


# Started first, so that no worker of a parallel run (make test's -n 2) runs them alone at
# the end: test_bench takes 80-90 s by itself, over a quarter of the suite's wall time.
_LONGEST_FIRST = ("tests/e2e/test_bench.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.partition("::")[0] not in _LONGEST_FIRST)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url(postgres_server_url: str) -> str:
    """One database for the session's function-scoped tests; emptied before each."""
    return fresh_postgres_database(postgres_server_url)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'sarah.db'}"
    url = request.getfixturevalue("postgres_url")
    empty_tables(url)
    return url



@pytest.fixture
def running(database_url: str) -> Iterator[RunningServer]:
    with serving(database_url) as server:
        yield server


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server on a SQLite file only, for tests whose subject is not the database."""
    with serving(f"sqlite:///{tmp_path / 'sarah.db'}") as server:
        yield server


@pytest.fixture
def channel(running: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> sarah_pb2_grpc.SarahServiceStub:
    return sarah_pb2_grpc.SarahServiceStub(channel)


@pytest.fixture
def server_process(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url)
    yield proc
    proc.stop(signal.SIGKILL)  # at once, if the test has not stopped it; the pipe is closed


@pytest.fixture
def clock() -> Clock:
    """A clock the test sets, for a service or store built in the test."""
    return Clock()
