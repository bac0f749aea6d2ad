"""Commits of other replicas, heard through PostgreSQL's LISTEN/NOTIFY.

Every write that logs events runs pg_notify (changelog.py), delivered at its commit to
every connection listening on the channel. One thread per process holds its own psycopg
connection (outside the pool) and pokes the tailer on each notification. A notification
lost while reconnecting is covered by the tailer's bounded poll of the log.
"""

import logging
import threading
from collections.abc import Callable

import psycopg

from server.storage.changelog import CHANNEL

_LOGGER = logging.getLogger(__name__)
_RECONNECT_SECONDS = 1.0


class Listener:
    """Calls `on_notify` for each commit announced on the change log's channel."""

    def __init__(self, url: str, on_notify: Callable[[], None]):
        self._url = url
        self._on_notify = on_notify
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sarah-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._on_notify()  # commits while not listening: read the log now
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1000):
                            self._on_notify()
            except psycopg.Error as exc:
                _LOGGER.warning("listening for commits failed (%s); reconnecting", exc)
                self._stopped.wait(_RECONNECT_SECONDS)
