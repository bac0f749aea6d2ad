"""Versioned schema migrations: bring an empty or older database to the current schema.

Each migration runs once, in order, and is recorded in `schema_migrations`. Replicas that
start at once take turns: PostgreSQL holds a transaction-scoped advisory lock, SQLite the
write lock (BEGIN IMMEDIATE), and each re-reads the version under the lock.
"""

import logging
import time
from collections.abc import Callable

import peewee

from server.storage.counts import rebuild_counts
from server.storage.database import is_sqlite
from server.storage.models import MODELS, LeadCount, bind_models, database_proxy

_LOGGER = logging.getLogger(__name__)
_ADVISORY_LOCK_KEY = 0x5A7A4  # any constant that is this service's own
_SQLITE_TRIES = 5


class SchemaMigration(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.TextField()
    applied_at = peewee.BigIntegerField()

    class Meta:
        database = database_proxy
        table_name = "schema_migrations"


def _initial_schema(db: peewee.Database) -> None:
    # safe=True (IF NOT EXISTS) adopts a database made before migrations existed.
    db.create_tables(MODELS, safe=True)


def _lead_counts(db: peewee.Database) -> None:
    db.create_tables([LeadCount], safe=True)
    rebuild_counts()


def _model_indexes(db: peewee.Database) -> None:
    # Creates whatever index of the models is missing (CREATE INDEX IF NOT EXISTS), and
    # drops the one GetStats used before lead counts (migration 2) made it dead weight.
    db.create_tables(MODELS, safe=True)
    db.execute_sql("DROP INDEX IF EXISTS "
                   "conversation_workspace_id_lead_temperature_state_lead_score")


MIGRATIONS: list[tuple[int, str, Callable[[peewee.Database], None]]] = [
    (1, "conversations and request ids", _initial_schema),
    (2, "lead counts for GetStats", _lead_counts),
    (3, "indexes for lists across workspaces", _model_indexes),
]
LATEST = MIGRATIONS[-1][0]


class SchemaBehind(RuntimeError):
    """The database's schema is older than this server needs."""


def _exclusive(db: peewee.Database):  # type: ignore[no-untyped-def]
    if is_sqlite(db):
        return db.atomic("IMMEDIATE")
    return db.atomic()


def current_version(db: peewee.Database) -> int:
    bind_models(db)
    with db.connection_context():
        if not db.table_exists(SchemaMigration._meta.table_name):
            return 0
        newest = SchemaMigration.select(peewee.fn.MAX(SchemaMigration.version)).scalar()
        return int(newest or 0)


def migrate(db: peewee.Database) -> tuple[int, int]:
    """Apply every pending migration; return (version before, version after)."""
    bind_models(db)
    for attempt in range(_SQLITE_TRIES):
        try:
            return _migrate_once(db)
        except peewee.OperationalError as exc:
            # Replicas opening a new SQLite file at once: the first connection switches it
            # to WAL, and SQLite answers another's switch "database is locked" at once,
            # without waiting in its busy handler (seen under load in CI). Once the file
            # is in WAL mode the switch is a no-op, so a short retry gets through.
            if not is_sqlite(db) or "locked" not in str(exc) or attempt == _SQLITE_TRIES - 1:
                raise
            _LOGGER.info("database locked while migrating; trying again")
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _migrate_once(db: peewee.Database) -> tuple[int, int]:
    with db.connection_context(), _exclusive(db):
        if not is_sqlite(db):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        db.create_tables([SchemaMigration], safe=True)
        before = int(SchemaMigration.select(peewee.fn.MAX(SchemaMigration.version)).scalar()
                     or 0)
        for version, name, step in MIGRATIONS:
            if version > before:
                _LOGGER.info("migrating to schema %d: %s", version, name)
                step(db)
                SchemaMigration.create(version=version, name=name,
                                       applied_at=time.time_ns() // 1000)
    return before, LATEST


def require_current(db: peewee.Database) -> None:
    """Raise SchemaBehind unless the database is at the latest schema."""
    version = current_version(db)
    if version < LATEST:
        raise SchemaBehind(f"the database schema is at version {version}, this server needs "
                           f"{LATEST}: run `sarah-server migrate` (or start with --migrate)")
