"""The lock that tells `sarah-server restore` a server is using a SQLite file.

A BSD flock on the database file itself: every server process holds it shared for its
life, and a restore takes it exclusively or refuses. On Linux, flock and SQLite's POSIX
byte-range locks do not see each other (over NFS flock is emulated with POSIX locks: keep
SQLite on a local disk, as SQLite itself says). A POSIX lock is dropped when its process
closes *any* descriptor of the file, so a server closes the lock's descriptor only once it
has closed every database connection.
"""

import fcntl
import logging
import os
from pathlib import Path

import peewee

from server.storage.database import is_sqlite

_LOGGER = logging.getLogger(__name__)


class ServingLock:
    """A server's shared hold on its database file, which makes a restore refuse."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        while self._fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                _LOGGER.info("waiting for the restore of %s to finish", path)
                fcntl.flock(fd, fcntl.LOCK_SH)
            if _same_file(fd, path):
                self._fd = fd
            else:  # a restore put a new file in place meanwhile: lock that one
                os.close(fd)

    def release(self) -> None:
        """Call after the last database connection of this process has closed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def serving_lock(db: peewee.Database) -> ServingLock | None:
    """The lock for a server of `db`, or None if it is not a SQLite file."""
    if not is_sqlite(db) or db.database in ("", ":memory:"):
        return None
    return ServingLock(Path(db.database))


def lock_exclusive(path: Path) -> int:
    """The descriptor of `path` (made empty if missing) holding its exclusive lock."""
    while True:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"refusing to restore over {path}: a sarah-server is running on "
                             "it (it holds the file's lock); stop every server and worker "
                             "using it, then restore") from None
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    held, named = os.fstat(fd), os.stat(path)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)
