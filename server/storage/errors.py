"""Driver failures (locked, busy, disk full, connection lost) as the service's Unavailable."""

import contextlib
import logging
from collections.abc import Iterator

import peewee
from playhouse.pool import MaxConnectionsExceeded

from server.core.errors import Unavailable

_LOGGER = logging.getLogger(__name__)

# Any failure of the database layer, for the commands that report it and exit; the
# service itself sees only Unavailable (database_errors below).
DatabaseError = peewee.PeeweeException


def _first_error(exc: BaseException) -> BaseException:
    """The error that started it. SQLite rolls a transaction back by itself on a full disk
    (and some I/O errors); peewee's ROLLBACK then fails with "no transaction is active", and
    that second error would hide the first."""
    first: BaseException | None = exc
    while first is not None and "no transaction is active" in str(first):
        first = first.__context__  # the driver's error, then the one before it
    return first or exc


def _is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL, or PostgreSQL's disk_full (SQLSTATE 53100) / ENOSPC."""
    return (getattr(exc.__context__, "sqlstate", None) == "53100"  # psycopg's DiskFull
            or "database or disk is full" in str(exc) or "No space left on device" in str(exc))


def is_deadlock(exc: BaseException) -> bool:
    """True if PostgreSQL chose `exc`'s transaction to break a deadlock (SQLSTATE 40P01)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlstate", None) == "40P01":  # psycopg's DeadlockDetected
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn driver failures into Unavailable; an IntegrityError passes (a race to retry)."""
    try:
        yield
    except MaxConnectionsExceeded as exc:
        raise Unavailable("every database connection is busy; retry shortly") from exc
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        first = _first_error(exc)
        if _is_disk_full(first):
            _LOGGER.error("database disk full: %s", first)
            raise Unavailable("the database's disk is full: writes fail until space is freed "
                              "where the database lives; reads still work") from exc
        _LOGGER.warning("database unavailable: %s", first)
        raise Unavailable(f"database unavailable: {first}; retry shortly") from exc
    except peewee.IntegrityError:
        raise
    except peewee.DatabaseError as exc:
        _LOGGER.warning("database error: %s", exc)
        raise Unavailable(f"database error: {exc}; retry shortly") from exc


def as_unavailable(exc: peewee.PeeweeException) -> Exception:
    """The error database_errors() makes of `exc` (for a write that failed on its own, in
    a transaction that goes on)."""
    try:
        with database_errors():
            raise exc
    except Exception as mapped:
        return mapped
    raise AssertionError("unreachable")
