"""The PostgreSQL commit listener (server/storage/notify.py): it hears commits announced on
the change log's channel, and stop() wakes it at once rather than at its wait's end.

Its wait is raised to a minute here, more than stop()'s join allows, so a listener still
alive after stop() returns is one that stop() did not wake."""

import threading
from collections.abc import Iterator

import psycopg
import pytest

from harness.waiting import wait_until
from server.storage import notify
from server.storage.changelog import CHANNEL
from server.storage.notify import Listener
from tests.support.threads import BackgroundThreads


class Heard:
    """What a listener's `on_notify` saw: how many calls, from which thread."""

    def __init__(self) -> None:
        self.calls = 0
        self.thread: threading.Thread | None = None

    def __call__(self) -> None:
        self.thread = threading.current_thread()
        self.calls += 1


@pytest.fixture(autouse=True)
def long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "_WAIT_SECONDS", 60.0)


@pytest.fixture
def started(postgres_url: str) -> Iterator[tuple[Listener, Heard]]:
    """A listening Listener: its first call (made once it listens) names its thread."""
    heard = Heard()
    listener = Listener(postgres_url, heard)
    listener.start()
    wait_until(lambda: heard.calls, 30, "the listener to listen", interval=0.01)
    yield listener, heard
    listener.stop()


def _announce(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "1"))


def test_a_commit_announced_on_the_channel_reaches_on_notify(
        started: tuple[Listener, Heard], postgres_url: str) -> None:
    _, heard = started
    before = heard.calls
    _announce(postgres_url)
    wait_until(lambda: heard.calls > before, 30, "the announced commit", interval=0.01)


def test_stop_returns_once_the_listening_thread_has_ended(
        started: tuple[Listener, Heard]) -> None:
    listener, heard = started
    listener.stop()
    assert heard.thread is not None and not heard.thread.is_alive()


def test_stop_ends_the_thread_while_commits_keep_arriving(
        started: tuple[Listener, Heard], postgres_url: str) -> None:
    listener, heard = started

    class Announcing(BackgroundThreads):
        def run(self, index: int) -> None:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                while not self.stopping.is_set():
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "1"))

    with Announcing(2, join_timeout=10):
        before = heard.calls
        wait_until(lambda: heard.calls > before + 10, 30, "commits to arrive", interval=0.01)
        listener.stop()
        assert heard.thread is not None and not heard.thread.is_alive()


def test_stopping_one_listener_does_not_poke_another(
        started: tuple[Listener, Heard], postgres_url: str) -> None:
    _, other = started
    before = other.calls
    mine = Heard()
    listener = Listener(postgres_url, mine)
    listener.start()
    wait_until(lambda: mine.calls, 30, "the second listener to listen", interval=0.01)
    listener.stop()
    _announce(postgres_url)  # a real commit after it: once heard, the stop was heard first
    wait_until(lambda: other.calls > before, 30, "the announced commit", interval=0.01)
    assert other.calls == before + 1
