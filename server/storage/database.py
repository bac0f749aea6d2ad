"""Opens the one database the service uses, chosen by its URL: SQLite through
playhouse.db_url, PostgreSQL through psycopg's own parsing of the URL (one host or several)."""

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import peewee
import psycopg
from peewee import Psycopg3Adapter
from playhouse import db_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from server.core.errors import Unavailable
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

_POSTGRES_SCHEMES = ("postgres", "postgresql")

# What every PostgreSQL connection of the service asks for, unless the URL says otherwise:
# - connect_timeout: psycopg tries the hosts of a URL one after another, each with this
#   timeout (psycopg/connection.py, Connection.connect: one attempt a host), so a host that
#   does not answer costs 5 s and the next is tried;
# - TCP keepalives: a connection to a machine that vanished (no FIN, no RST: a lost node,
#   a partition) is found dead within 5 + 3 * 2 = 11 s instead of the kernel's two hours,
#   and the call waiting on it fails UNAVAILABLE instead of hanging.
_CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
}
# Appended to the URL's own `options`, so it wins over them (and over the role's and the
# database's settings): a writer waiting on a row lock gives up like SQLite's busy timeout.
_SERVICE_OPTIONS = f"-c lock_timeout={LOCK_WAIT_MS}"

# A commit waits for the synchronous standby (Patroni's synchronous_mode) after its record is
# on the primary's disk and before anyone sees it. A statement_timeout cannot end that wait
# (PostgreSQL disarms it before committing: postgres.c, finish_xact_command;
# tests/service/test_synchronous_commit.py holds the service to it), but a cancel request
# can (pg_cancel_backend, a driver's client-side timeout): PostgreSQL then keeps the commit,
# makes it visible and answers success with only this WARNING, for a write the standby may
# not have, which a failover loses (Patroni's replication modes page:
# https://patroni.readthedocs.io/en/latest/replication_modes.html; patroni/patroni#1412).
# The service never cancels a statement; when something else does, session() answers
# UNAVAILABLE instead of the success.
_UNREPLICATED = ("canceling wait for synchronous replication",
                 "canceling the wait for synchronous replication")
_commit_wait = threading.local()  # per thread: the notice arrives in the committing thread


def _note_cancelled_wait(notice: psycopg.errors.Diagnostic) -> None:
    if (notice.message_primary or "").startswith(_UNREPLICATED):
        _commit_wait.cancelled = True


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
    """A pooled connection for the duration, with driver errors mapped to Unavailable, and
    a commit whose wait for the synchronous standby was cancelled too (_UNREPLICATED): the
    caller retries it with its request_id, as after a connection lost during a commit."""
    _commit_wait.cancelled = False
    with database_errors(), db.connection_context():
        yield
    if _commit_wait.cancelled:
        raise Unavailable("the write was committed on the primary, but its wait for the "
                          "synchronous standby was cancelled: it may not survive a failover; "
                          "retry it with the same request_id")


@contextlib.contextmanager
def snapshot(db: peewee.Database) -> Iterator[None]:
    """One read transaction whose statements all see the same committed state (SQLite
    in WAL mode takes the snapshot at the first read of a transaction)."""
    with db.atomic():
        if not is_sqlite(db):
            db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _unsupported(url: str, why: str = "") -> ValueError:
    return ValueError(f"unsupported database URL {redact_url(url)!r}: "
                      + (without_secrets(why, url) if why else "use sqlite:///PATH or "
                         "postgresql://USER@HOST/DB (or several hosts: "
                         "postgresql://USER@HOST1:PORT1,HOST2:PORT2/DB)"))


def postgres_conninfo(url: str) -> str:
    """The libpq connection string of a postgresql:// URL, with the service's defaults.

    A URL may name several hosts, `postgresql://u@h1:p1,h2:p2,h3:p3/db`: libpq tries them
    in turn, and with `target_session_attrs=read-write` only a server that accepts writes
    (the primary) is taken (PostgreSQL's libpq docs, "Specifying Multiple Hosts" and
    target_session_attrs: https://www.postgresql.org/docs/current/libpq-connect.html).
    With several hosts and no target_session_attrs the service adds read-write: it
    writes, and a standby listed first would otherwise take every connection.
    playhouse.db_url cannot read such a URL (it parses one host and one port), so the URL
    is parsed by libpq (psycopg's conninfo_to_dict) and reaches psycopg whole."""
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise _unsupported(url, str(exc)) from exc
    for name, value in _CONNECTION_DEFAULTS.items():
        params.setdefault(name, value)
    if "," in str(params.get("host", "")) + str(params.get("hostaddr", "")):
        params.setdefault("target_session_attrs", "read-write")
    params["options"] = " ".join(filter(None, (params.get("options"), _SERVICE_OPTIONS)))
    return make_conninfo("", **params)


class _Psycopg(Psycopg3Adapter):
    """peewee's psycopg 3 adapter, connecting with the database's whole connection string
    (peewee's own would read it as a database name unless it is a one-host URL)."""

    def connect(self, db: peewee.Database, **params: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(db.database, **params)
        conn.add_notice_handler(_note_cancelled_wait)
        return conn


class _PooledPostgres(PooledPostgresqlDatabase):  # type: ignore[misc]
    """Connections from a pool, each checked with a round trip when it is taken (peewee's
    pool does that: a connection broken by a failover is dropped, not handed out) and
    dropped when it is given back broken."""

    psycopg3_adapter = _Psycopg


def open_database(url: str, pool_size: int = 16) -> peewee.Database:
    """Return an unconnected, pooled peewee database for `url`: sqlite:///PATH, or a
    postgresql:// URL of one host or several (postgres_conninfo)."""
    scheme = urlparse(url).scheme
    # Every call borrows a pooled connection and gives it back, so no call pays for opening
    # one and the pool size, not the thread count, bounds the connections a server holds.
    pool: dict[str, Any] = {
        "max_connections": pool_size,
        "timeout": LOCK_WAIT_MS / 1000,  # wait this long for a free pooled connection
        "stale_timeout": 300,
    }
    if scheme in _POSTGRES_SCHEMES:
        return _PooledPostgres(postgres_conninfo(url), prefer_psycopg3=True, **pool)
    if scheme != "sqlite":
        raise _unsupported(url)
    path = db_url.parse(url)["database"]
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        db: peewee.Database = db_url.connect(
            "sqlite+pool" + url[len(scheme):], **pool, pragmas=_SQLITE_PRAGMAS,
            # A pooled connection moves between worker threads (never used by two at once).
            check_same_thread=False)
        return db
    except (RuntimeError, ValueError) as exc:
        raise _unsupported(url, str(exc)) from exc


def unreachable(db: peewee.Database) -> str | None:
    """None if `db` can serve the service, else why not: it does not answer, or (PostgreSQL)
    it answers as a standby, which cannot take a write (a one-host URL naming a node that
    a failover demoted). Each pooled connection left idle through a failure is closed:
    opened before it, it would fail the next call instead."""
    try:
        with db.connection_context():
            if is_sqlite(db):
                db.execute_sql("SELECT 1")
            elif db.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0]:
                return "the database is a standby (read-only): no primary at this address"
    except MaxConnectionsExceeded:
        return None  # every connection is busy serving calls: busy is not down
    except peewee.PeeweeException as exc:
        close_idle = getattr(db, "close_idle", None)
        if close_idle is not None:
            close_idle()
        return str(exc).strip() or type(exc).__name__
    return None
