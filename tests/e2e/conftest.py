"""Fixtures of the end-to-end tests: stacks (a server and Envoy in front of it) and a real
browser."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import Browser
from tests.support.databases import new_database_url
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, backend: str,
          request: pytest.FixtureRequest) -> Iterator[Stack]:
    """One stack for a test module, on each backend; tests sharing it keep apart by
    workspace."""
    workdir = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    running = Stack(workdir, new_database_url(backend, workdir, request))
    yield running
    running.stop()


@pytest.fixture
def sqlite_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A server in this process over a new SQLite file, and Envoy in front of it."""
    running = Stack(tmp_path, new_database_url("sqlite", tmp_path, request))
    yield running
    running.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    started = Browser(tmp_path)
    yield started
    started.close()
