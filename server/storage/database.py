"""Opens the one database the service uses, chosen by a playhouse URL."""

import contextlib
import os
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

import peewee
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded

from server.storage.errors import database_errors

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


# libpq reads a password from the URL's user info or from these query parameters.
_SECRET_PARAMETERS = ("password", "sslpassword")
HIDDEN = "***"


def _redacted(url: str) -> tuple[str, list[str]]:
    """`url` with its secrets replaced by ***, and the secrets as written."""
    scheme, slashes, rest = url.partition("://")
    if not slashes:
        return url, []
    # The authority ends at the path or the query, whichever comes first.
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, _at, host = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    secrets = [password] if colon and password else []
    if secrets:
        netloc = f"{user}:{HIDDEN}@{host}"
    head, question, query = tail.partition("?")
    pairs = []
    for pair in query.split("&") if question else ():
        name, equals, value = pair.partition("=")
        if equals and value and unquote(name).lower() in _SECRET_PARAMETERS:
            secrets.append(value)
            pair = f"{name}={HIDDEN}"
        pairs.append(pair)
    return f"{scheme}://{netloc}{head}{question}{'&'.join(pairs)}", secrets


def redact_url(url: str) -> str:
    """`url` as it may be shown: its password, if it has one, is ***. Every place that
    shows a database URL shows this."""
    return _redacted(url)[0]


def without_secrets(text: str, *urls: str) -> str:
    """`text` with every password of `urls` hidden, as written and percent-decoded: for
    errors and log lines that may quote a URL (libpq's quote it whole)."""
    secrets = {form for url in urls for raw in _redacted(url)[1]
               for form in (raw, unquote(raw))}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def is_sqlite(db: peewee.Database) -> bool:
    return isinstance(db, peewee.SqliteDatabase)


@contextlib.contextmanager
def session(db: peewee.Database) -> Iterator[None]:
    """A pooled connection for the duration, with driver errors mapped to Unavailable."""
    with database_errors(), db.connection_context():
        yield


@contextlib.contextmanager
def snapshot(db: peewee.Database) -> Iterator[None]:
    """One read transaction whose statements all see the same committed state (SQLite
    in WAL mode takes the snapshot at the first read of a transaction)."""
    with db.atomic():
        if not is_sqlite(db):
            db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def open_database(url: str, pool_size: int = 16) -> peewee.Database:
    """Return an unconnected, pooled peewee database for `url` (playhouse.db_url form)."""
    parsed = urlparse(url)
    scheme = _POOLED_SCHEMES.get(parsed.scheme)
    if scheme is None:
        raise ValueError(f"unsupported database URL {redact_url(url)!r}: use sqlite:///PATH or "
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
        raise ValueError(f"unsupported database URL {redact_url(url)!r}: "
                         f"{without_secrets(str(exc), url)}") from exc


def unreachable(db: peewee.Database) -> str | None:
    """None if `db` answers `SELECT 1`, else why not. Each pooled connection left idle
    through a failure is closed: opened before it, it would fail the next call instead."""
    try:
        with db.connection_context():
            db.execute_sql("SELECT 1")
    except MaxConnectionsExceeded:
        return None  # every connection is busy serving calls: busy is not down
    except peewee.PeeweeException as exc:
        close_idle = getattr(db, "close_idle", None)
        if close_idle is not None:
            close_idle()
        return str(exc).strip() or type(exc).__name__
    return None
