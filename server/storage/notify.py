"""Commits of other replicas, heard through PostgreSQL's LISTEN/NOTIFY.

Every write that logs events runs pg_notify (changelog.py), delivered at its commit to
every connection listening on the channel. One thread per process holds its own psycopg
connection (outside the pool) and pokes the tailer on each notification. A notification
lost while reconnecting is covered by the tailer's bounded poll of the log.

When the connection breaks (the primary failed over, or restarted), the thread connects
again every second with the same connection string as the pool's, so with a multi-host URL
it finds the new primary, LISTENs there and pokes the tailer at once: the tailer reads the
log from the last revision it delivered, on the new primary.
"""

import logging
import secrets
import threading
from collections.abc import Callable

import psycopg

from server.storage.changelog import CHANNEL

_LOGGER = logging.getLogger(__name__)
_RECONNECT_SECONDS = 1.0
# How long the loop waits for a notification before it looks at the stop flag again. stop()
# wakes it at once (below); this bound only matters if that wake-up cannot be sent.
_WAIT_SECONDS = 1.0


class Listener:
    """Calls `on_notify` for each commit announced on the change log's channel."""

    def __init__(self, conninfo: str, on_notify: Callable[[], None]):
        """`conninfo`: a libpq connection string or URL (database.postgres_conninfo's)."""
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._stopped = threading.Event()
        # psycopg's notifies() holds the connection's lock while it waits, so stop() cannot
        # use that connection: it sends a NOTIFY from one of its own, on a channel only this
        # listener hears (so the other replicas' listeners are not poked for nothing).
        self._wake_channel = f"{CHANNEL}_stop_{secrets.token_hex(8)}"
        self._thread = threading.Thread(target=self._run, name="sarah-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Return once the listening thread has ended (at once, not at its next timeout)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                conn.execute(f"NOTIFY {self._wake_channel}")
        except psycopg.Error as exc:  # the database is down: the loop sees the flag in time
            _LOGGER.info("could not wake the commit listener (%s)", exc)

    def _run(self) -> None:
        failing = False  # logged once a failure, and once the recovery, not every second
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Listening before the flag is read: a stop() that set it after the
                    # read sends its wake-up to a connection that hears it.
                    conn.execute(f"LISTEN {self._wake_channel}")
                    if failing:
                        _LOGGER.info("listening for commits again")
                        failing = False
                    self._on_notify()  # commits while not listening: read the log now
                    while not self._stopped.is_set():
                        for notify in conn.notifies(timeout=_WAIT_SECONDS, stop_after=1000):
                            if notify.channel == self._wake_channel:
                                break
                            self._on_notify()
            except psycopg.Error as exc:
                if not failing:
                    _LOGGER.warning("listening for commits failed (%s); reconnecting every "
                                    "%g s", str(exc).strip(), _RECONNECT_SECONDS)
                failing = True
                self._stopped.wait(_RECONNECT_SECONDS)
