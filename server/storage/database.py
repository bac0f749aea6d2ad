"""Opens the one database the service uses, chosen by a playhouse URL."""

import os
from urllib.parse import urlparse

import peewee
from playhouse import db_url

DEFAULT_URL = "sqlite:///data/sarah.db"
LOCK_WAIT_MS = 5000

# WAL lets readers run beside the one writer; synchronous=NORMAL in WAL mode survives a
# process crash (only an OS crash can lose the last transactions); the busy timeout makes
# a writer wait for the lock instead of failing at once.
_SQLITE_PRAGMAS = {
    "busy_timeout": LOCK_WAIT_MS,  # first, so that the pragmas after it wait too
    "journal_mode": "wal",
    "synchronous": "normal",
}

# Every call borrows a pooled connection and gives it back, so no call pays for opening
# one and the pool size, not the thread count, bounds the connections a server holds.
_POOLED_SCHEMES = {
    "sqlite": "sqlite+pool",
    "postgres": "postgres+pool",
    "postgresql": "postgresql+pool",
}


def is_sqlite(db: peewee.Database) -> bool:
    return isinstance(db, peewee.SqliteDatabase)


def open_database(url: str, pool_size: int = 16) -> peewee.Database:
    """Return an unconnected, pooled peewee database for `url` (playhouse.db_url form)."""
    parsed = urlparse(url)
    scheme = _POOLED_SCHEMES.get(parsed.scheme)
    if scheme is None:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or "
                         "postgresql://USER@HOST/DB")
    params: dict[str, object] = {
        "max_connections": pool_size,
        "timeout": LOCK_WAIT_MS / 1000,  # wait this long for a free pooled connection
        "stale_timeout": 300,
    }
    if scheme.startswith("sqlite"):
        path = db_url.parse(url)["database"]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        params["pragmas"] = _SQLITE_PRAGMAS
        # A pooled connection moves between worker threads (never used by two at once).
        params["check_same_thread"] = False
    else:
        # A writer waiting on a row lock gives up like SQLite's busy timeout does, and a
        # dead server is noticed within seconds.
        params["options"] = f"-c lock_timeout={LOCK_WAIT_MS}"
        params["connect_timeout"] = 5
    try:
        db: peewee.Database = db_url.connect(scheme + url[len(parsed.scheme):], **params)
        return db
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unsupported database URL {url!r}: {exc}") from exc
