"""Opens the one database the service uses, chosen by a playhouse URL."""

import logging
import os
from urllib.parse import urlparse

import peewee
from playhouse import db_url

_LOGGER = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///data/sarah.db"

# WAL lets readers run beside the one writer; synchronous=NORMAL in WAL mode survives a
# process crash (only an OS crash can lose the last transactions); the busy timeout makes
# a writer wait for the lock instead of failing at once.
_SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 5000,
    "foreign_keys": 1,
}

# Each gRPC worker thread keeps one pooled connection for its lifetime, so no call pays for
# opening one; the pool exists so that shutdown can close every thread's connection.
_POOLED_SCHEMES = {"sqlite": "sqlite+pool", "postgres": "postgres+pool",
                   "postgresql": "postgresql+pool"}


def is_sqlite(db: peewee.Database) -> bool:
    return isinstance(db, peewee.SqliteDatabase)


def open_database(url: str) -> peewee.Database:
    """Return an unconnected peewee database for `url` (playhouse.db_url form)."""
    parsed = urlparse(url)
    scheme = _POOLED_SCHEMES.get(parsed.scheme, parsed.scheme)
    pooled_url = scheme + url[len(parsed.scheme):]
    params: dict[str, object] = {"max_connections": None}
    if "sqlite" in scheme:
        path = db_url.parse(url)["database"]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        params["pragmas"] = _SQLITE_PRAGMAS
        # Connections are per thread and never shared, as peewee requires.
        params["check_same_thread"] = False
    try:
        return db_url.connect(pooled_url, **params)
    except RuntimeError as exc:
        raise ValueError(f"unsupported database URL {url!r}: {exc}") from exc
