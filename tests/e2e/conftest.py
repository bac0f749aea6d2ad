"""Fixtures of the end-to-end tests that run a real browser against a stack."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import Browser
from tests.support.databases import new_database_url
from tests.support.stack import Stack


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
