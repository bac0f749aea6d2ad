"""The lock SQLite writers of several server processes (`--workers N`) take in turn.

SQLite lets one connection write at a time. A writer that finds the file locked by
another process waits in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... up to 100 ms
between tries and so keeps missing the moment the lock is free: with two workers writing
flat out, UpsertState's p99 was 20-25x its p50 (270-360 ms against 14 ms), against 5-6x
with one worker (issue 14). Taken first, this lock makes the SQLite lock free whenever a
writer gets it, and a waiter notices its release within a millisecond.

A BSD flock on a file beside the database (`<database>.writer-lock`), never opened by
SQLite: flock and SQLite's POSIX locks do not see each other on Linux, and closing this
descriptor cannot drop one of SQLite's locks. The kernel drops it when its process dies.
"""

import fcntl
import os
import threading
import time
from pathlib import Path

# How long a waiter sleeps between tries, growing to the most: short enough that a lock
# held for one group's transaction (a few milliseconds) is taken soon after its release.
_FIRST_NAP_S = 0.0002
_LONGEST_NAP_S = 0.001


class WriterLock:
    """One process's hold on the writers' lock of a SQLite file; the caller serialises
    its own threads (transactions.py holds its writer lock around this one)."""

    def __init__(self, database: Path):
        self._path = Path(f"{database}.writer-lock")
        self._fd: int | None = None
        self._opening = threading.Lock()

    def acquire(self, timeout: float) -> bool:
        """Take the lock within `timeout` seconds; False if another process held it all
        that time."""
        fd = self._descriptor()
        deadline, nap = time.monotonic() + timeout, _FIRST_NAP_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
            time.sleep(nap)
            nap = min(nap * 2, _LONGEST_NAP_S)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._opening:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _descriptor(self) -> int:
        with self._opening:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            return self._fd
