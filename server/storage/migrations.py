"""Versioned schema migrations: bring an empty or older database to the current schema.

Each migration runs once, in order, and is recorded in `schema_migrations`. Replicas that
start at once take turns: PostgreSQL holds a transaction-scoped advisory lock, SQLite the
write lock (BEGIN IMMEDIATE), and each re-reads the version under the lock.

Each migration states its own DDL, written out as peewee generated it from the models of
its day, so it means the same forever whatever the models become; a test compares the
schema they build with the models. The SQL is the same on both databases but for the
integer types, which {serial}, {bigserial} and {bigint} stand for, and for statements
marked _PostgresOnly, which SQLite skips (see there).
"""

import logging
import time
from collections.abc import Sequence

import peewee

from server.storage.database import is_sqlite

_LOGGER = logging.getLogger(__name__)
_ADVISORY_LOCK_KEY = 0x5A7A4  # any constant that is this service's own
_SQLITE_TRIES = 5

_TYPES = {
    "sqlite": {"serial": "INTEGER", "bigserial": "INTEGER", "bigint": "INTEGER"},
    "postgresql": {"serial": "SERIAL", "bigserial": "BIGSERIAL", "bigint": "BIGINT"},
}


class _PostgresOnly(str):
    """A statement SQLite has no use for: widening a VARCHAR. SQLite never enforces a
    VARCHAR's length (its type affinity is TEXT whatever the declared width) and cannot
    alter a column's type without copying the whole table, so it keeps the declared width
    of the day the column was made."""


_SCHEMA_MIGRATIONS = (
    'CREATE TABLE IF NOT EXISTS "schema_migrations" ("version" INTEGER NOT NULL PRIMARY KEY, '
    '"name" TEXT NOT NULL, "applied_at" {bigint} NOT NULL)'
)

# IF NOT EXISTS throughout: migration 1 adopts a database made before migrations existed.
_CONVERSATIONS_AND_REQUEST_IDS = (
    'CREATE TABLE IF NOT EXISTS "conversation" ("id" {serial} NOT NULL PRIMARY KEY, '
    '"workspace_id" VARCHAR(64) NOT NULL, "contact_phone" VARCHAR(20) NOT NULL, '
    '"state" VARCHAR(16) NOT NULL, "lead_score" INTEGER NOT NULL, '
    '"lead_temperature" VARCHAR(8) NOT NULL, "name" TEXT, "business_type" TEXT, '
    '"team_size" INTEGER, "pain_points" TEXT NOT NULL, "goals" TEXT, '
    '"language" VARCHAR(4) NOT NULL, "message_count" INTEGER NOT NULL, '
    '"created_at" {bigint} NOT NULL, "updated_at" {bigint} NOT NULL, '
    '"last_message_at" {bigint} NOT NULL, "etag" VARCHAR(32) NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "conversation_workspace_id_contact_phone" '
    'ON "conversation" ("workspace_id", "contact_phone")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_lead_score_contact_phone" '
    'ON "conversation" ("workspace_id", "lead_score", "contact_phone")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_last_message_at_contact_phone" '
    'ON "conversation" ("workspace_id", "last_message_at", "contact_phone")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_created_at_contact_phone" '
    'ON "conversation" ("workspace_id", "created_at", "contact_phone")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_updated_at_contact_phone" '
    'ON "conversation" ("workspace_id", "updated_at", "contact_phone")',
    # Covered GetStats until lead counts (migration 2); migration 3 drops it.
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_lead_temperature_state_lead_score" '
    'ON "conversation" ("workspace_id", "lead_temperature", "state", "lead_score")',
    'CREATE TABLE IF NOT EXISTS "upsert_request" ("id" {bigserial} NOT NULL PRIMARY KEY, '
    '"workspace_id" VARCHAR(64) NOT NULL, "contact_phone" VARCHAR(20) NOT NULL, '
    '"request_id" VARCHAR(128) NOT NULL, "created_at" {bigint} NOT NULL, '
    '"result" TEXT NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "upsert_request_created_at" ON "upsert_request" ("created_at")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "upsert_request_workspace_id_contact_phone_request_id" '
    'ON "upsert_request" ("workspace_id", "contact_phone", "request_id")',
)

_LEAD_COUNTS = (
    'CREATE TABLE IF NOT EXISTS "lead_count" ("id" {serial} NOT NULL PRIMARY KEY, '
    '"workspace_id" VARCHAR(64) NOT NULL, "lead_temperature" VARCHAR(8) NOT NULL, '
    '"state" VARCHAR(16) NOT NULL, "n" {bigint} NOT NULL, "score_sum" {bigint} NOT NULL)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "lead_count_workspace_id_lead_temperature_state" '
    'ON "lead_count" ("workspace_id", "lead_temperature", "state")',
    # Count the conversations already stored.
    'DELETE FROM "lead_count"',
    'INSERT INTO "lead_count" ("workspace_id", "lead_temperature", "state", "n", "score_sum") '
    'SELECT "workspace_id", "lead_temperature", "state", COUNT("id"), SUM("lead_score") '
    'FROM "conversation" GROUP BY "workspace_id", "lead_temperature", "state"',
)

_INDEXES_ACROSS_WORKSPACES = (
    'CREATE INDEX IF NOT EXISTS "conversation_lead_score_contact_phone_workspace_id" '
    'ON "conversation" ("lead_score", "contact_phone", "workspace_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_last_message_at_contact_phone_workspace_id" '
    'ON "conversation" ("last_message_at", "contact_phone", "workspace_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_created_at_contact_phone_workspace_id" '
    'ON "conversation" ("created_at", "contact_phone", "workspace_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_updated_at_contact_phone_workspace_id" '
    'ON "conversation" ("updated_at", "contact_phone", "workspace_id")',
    # Dead weight since lead counts (migration 2).
    'DROP INDEX IF EXISTS "conversation_workspace_id_lead_temperature_state_lead_score"',
)

_OLD_LIST_INDEXES = (
    "conversation_workspace_id_lead_score_contact_phone",
    "conversation_workspace_id_last_message_at_contact_phone",
    "conversation_workspace_id_created_at_contact_phone",
    "conversation_workspace_id_updated_at_contact_phone",
    "conversation_lead_score_contact_phone_workspace_id",
    "conversation_last_message_at_contact_phone_workspace_id",
    "conversation_created_at_contact_phone_workspace_id",
    "conversation_updated_at_contact_phone_workspace_id",
)

# A lead is a phone number, a BSUID, or both: "" stands for "none" (so the columns stay
# NOT NULL and every stored lead keeps its phone), and each key is unique per workspace
# where present. Page order breaks ties by the BSUID after the phone, so the list
# indexes gain it. Request records carry the BSUID too, so BSUID-only leads have them.
_LEADS_BY_BSUID = (
    'ALTER TABLE "conversation" ADD COLUMN "business_scoped_user_id" VARCHAR(103) '
    "NOT NULL DEFAULT ''",
    'ALTER TABLE "conversation" ADD COLUMN "parent_business_scoped_user_id" VARCHAR(128) '
    "NOT NULL DEFAULT ''",
    'ALTER TABLE "conversation" ADD COLUMN "username" VARCHAR(64) NOT NULL DEFAULT \'\'',
    'DROP INDEX IF EXISTS "conversation_workspace_id_contact_phone"',
    'CREATE UNIQUE INDEX IF NOT EXISTS "conversation_workspace_id_contact_phone" '
    'ON "conversation" ("workspace_id", "contact_phone") WHERE ("contact_phone" != \'\')',
    'CREATE UNIQUE INDEX IF NOT EXISTS "conversation_workspace_id_business_scoped_user_id" '
    'ON "conversation" ("workspace_id", "business_scoped_user_id") '
    'WHERE ("business_scoped_user_id" != \'\')',
    *(f'DROP INDEX IF EXISTS "{name}"' for name in _OLD_LIST_INDEXES),
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_lead_score_contact_phone_busin_f00e59e" '
    'ON "conversation" ("workspace_id", "lead_score", "contact_phone", "business_scoped_user_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_last_message_at_contact_phone__85c2374" '
    'ON "conversation" ("workspace_id", "last_message_at", "contact_phone", '
    '"business_scoped_user_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_created_at_contact_phone_busin_7d985f7" '
    'ON "conversation" ("workspace_id", "created_at", "contact_phone", "business_scoped_user_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_workspace_id_updated_at_contact_phone_busin_8558b11" '
    'ON "conversation" ("workspace_id", "updated_at", "contact_phone", "business_scoped_user_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_lead_score_contact_phone_business_scoped_us_d5baeed" '
    'ON "conversation" ("lead_score", "contact_phone", "business_scoped_user_id", "workspace_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_last_message_at_contact_phone_business_scop_a9dba63" '
    'ON "conversation" ("last_message_at", "contact_phone", "business_scoped_user_id", '
    '"workspace_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_created_at_contact_phone_business_scoped_us_f899fab" '
    'ON "conversation" ("created_at", "contact_phone", "business_scoped_user_id", "workspace_id")',
    'CREATE INDEX IF NOT EXISTS "conversation_updated_at_contact_phone_business_scoped_us_7096a07" '
    'ON "conversation" ("updated_at", "contact_phone", "business_scoped_user_id", "workspace_id")',
    'ALTER TABLE "upsert_request" ADD COLUMN "business_scoped_user_id" VARCHAR(103) '
    "NOT NULL DEFAULT ''",
    'DROP INDEX IF EXISTS "upsert_request_workspace_id_contact_phone_request_id"',
    'CREATE UNIQUE INDEX IF NOT EXISTS '
    '"upsert_request_workspace_id_contact_phone_business_scope_ab7370e" ON "upsert_request" '
    '("workspace_id", "contact_phone", "business_scoped_user_id", "request_id")',
    'CREATE INDEX IF NOT EXISTS "upsert_request_workspace_id_business_scoped_user_id_request_id" '
    'ON "upsert_request" ("workspace_id", "business_scoped_user_id", "request_id")',
)

# v1 stored an Argentine number as "+54" + 10 digits; WhatsApp's mobile form, which the
# phone rules store since v1.1, is "+549" + the same 10 digits. Numbers of area codes
# (first digit 1 to 3) move to that form; 0800 and 0600 numbers (first digit 8 or 6) have
# none and stay. Where v1 held both spellings as two leads, they become one: the "+549"
# row is kept, its empty slots filled from the other, message counts summed, created_at
# the earliest and last_message_at the latest; request records follow their lead.
_OLD_AR = ("substr({t}.\"contact_phone\", 1, 3) = '+54' AND length({t}.\"contact_phone\") = 13 "
           "AND substr({t}.\"contact_phone\", 4, 1) IN ('1', '2', '3')")
_NEW_AR = ("substr({t}.\"contact_phone\", 1, 4) = '+549' AND length({t}.\"contact_phone\") = 14 "
           "AND substr({t}.\"contact_phone\", 5, 1) IN ('1', '2', '3')")
_TWIN = ('(SELECT {col} FROM "conversation" AS "old" '
         'WHERE "old"."workspace_id" = "conversation"."workspace_id" '
         'AND "old"."contact_phone" = \'+54\' || substr("conversation"."contact_phone", 5))')


def _twin(column: str) -> str:
    return _TWIN.format(col=f'"old"."{column}"')


_ARGENTINE_MOBILE_FORM = (
    'UPDATE "conversation" SET '
    + ", ".join(
        [f'"{slot}" = COALESCE("{slot}", {_twin(slot)})'
         for slot in ("name", "business_type", "team_size", "goals")]
        + [f'"pain_points" = CASE WHEN "pain_points" = \'[]\' THEN {_twin("pain_points")} '
           'ELSE "pain_points" END',
           f'"message_count" = "message_count" + {_twin("message_count")}',
           f'"created_at" = CASE WHEN {_twin("created_at")} < "created_at" '
           f'THEN {_twin("created_at")} ELSE "created_at" END',
           f'"last_message_at" = CASE WHEN {_twin("last_message_at")} > "last_message_at" '
           f'THEN {_twin("last_message_at")} ELSE "last_message_at" END'])
    + " WHERE " + _NEW_AR.format(t='"conversation"') + f" AND EXISTS {_twin('id')}",
    'DELETE FROM "conversation" WHERE ' + _OLD_AR.format(t='"conversation"')
    + ' AND EXISTS (SELECT 1 FROM "conversation" AS "new" '
    'WHERE "new"."workspace_id" = "conversation"."workspace_id" '
    'AND "new"."contact_phone" = \'+549\' || substr("conversation"."contact_phone", 4))',
    'UPDATE "conversation" SET "contact_phone" = \'+549\' || substr("contact_phone", 4) '
    'WHERE ' + _OLD_AR.format(t='"conversation"'),
    'DELETE FROM "upsert_request" WHERE ' + _OLD_AR.format(t='"upsert_request"')
    + ' AND EXISTS (SELECT 1 FROM "upsert_request" AS "new" '
    'WHERE "new"."workspace_id" = "upsert_request"."workspace_id" '
    'AND "new"."business_scoped_user_id" = "upsert_request"."business_scoped_user_id" '
    'AND "new"."request_id" = "upsert_request"."request_id" '
    'AND "new"."contact_phone" = \'+549\' || substr("upsert_request"."contact_phone", 4))',
    'UPDATE "upsert_request" SET "contact_phone" = \'+549\' || substr("contact_phone", 4) '
    'WHERE ' + _OLD_AR.format(t='"upsert_request"'),
    # A merge removed leads: count afresh, as migration 2 does.
    *_LEAD_COUNTS[2:],
)

# The change log of WatchLeads: an event per lead a committed write touched, and the one
# row that hands out revisions (changelog.py says why a counter row, not a sequence).
# The log starts empty at revision 0: leads stored before it have no events, and a
# watcher lists them first, as it would anyway.
_CHANGE_LOG = (
    'CREATE TABLE IF NOT EXISTS "lead_event" ("revision" {bigint} NOT NULL PRIMARY KEY, '
    '"workspace_id" VARCHAR(64) NOT NULL, "kind" VARCHAR(16) NOT NULL, '
    '"contact_phone" VARCHAR(20) NOT NULL, "business_scoped_user_id" VARCHAR(103) NOT NULL, '
    '"conversation" TEXT NOT NULL, "changed" TEXT NOT NULL, "at" {bigint} NOT NULL)',
    'CREATE INDEX IF NOT EXISTS "lead_event_at" ON "lead_event" ("at")',
    'CREATE INDEX IF NOT EXISTS "lead_event_workspace_id_contact_phone" '
    'ON "lead_event" ("workspace_id", "contact_phone")',
    'CREATE INDEX IF NOT EXISTS "lead_event_workspace_id_business_scoped_user_id" '
    'ON "lead_event" ("workspace_id", "business_scoped_user_id")',
    'CREATE TABLE IF NOT EXISTS "log_head" ("id" INTEGER NOT NULL PRIMARY KEY, '
    '"revision" {bigint} NOT NULL, "pruned_through" {bigint} NOT NULL)',
    'INSERT INTO "log_head" ("id", "revision", "pruned_through") VALUES (1, 0, 0)',
)

# History and activity (ListEvents, GetActivity).
# Each event names the conversation row whose story it belongs to (0: none found), so a
# lead's history follows it through identity changes (the row keeps its id) and merges
# (the absorbed half's events move to the survivor); key-and-revision indexes serve the
# history of a key no stored lead holds, and erasure of events from before lead_id. The
# events already logged are given the row that holds their keys now, as identity.meant
# would choose it: the BSUID's holder, else the phone's unless it is another person's.
_LEAD_OF_EVENT = (
    'COALESCE((SELECT "c"."id" FROM "conversation" AS "c" '
    'WHERE "c"."workspace_id" = "lead_event"."workspace_id" '
    'AND "lead_event"."business_scoped_user_id" != \'\' AND "c"."business_scoped_user_id" != \'\' '
    'AND "c"."business_scoped_user_id" = "lead_event"."business_scoped_user_id"), '
    '(SELECT "c"."id" FROM "conversation" AS "c" '
    'WHERE "c"."workspace_id" = "lead_event"."workspace_id" '
    'AND "lead_event"."contact_phone" != \'\' AND "c"."contact_phone" != \'\' '
    'AND "c"."contact_phone" = "lead_event"."contact_phone" '
    'AND ("lead_event"."business_scoped_user_id" = \'\' OR "c"."business_scoped_user_id" '
    'IN (\'\', "lead_event"."business_scoped_user_id"))), 0)'
)
# Activity: what happened per UTC quarter-hour (epoch seconds // 900) and workspace. Every
# zone's offset today is a whole number of quarter-hours (Kolkata +5:30, Kathmandu +5:45,
# Chatham +12:45), so every local day is a whole set of buckets, DST days included. The
# leads already stored are counted as they stand: a new lead and its messages when it was
# created, its handoff, completion or hot temperature when it was last updated.
_QUARTER_US = 900 * 1_000_000
_HISTORY_AND_ACTIVITY = (
    'ALTER TABLE "lead_event" ADD COLUMN "lead_id" {bigint} NOT NULL DEFAULT 0',
    f'UPDATE "lead_event" SET "lead_id" = {_LEAD_OF_EVENT}',
    'CREATE INDEX IF NOT EXISTS "lead_event_lead_id_revision" '
    'ON "lead_event" ("lead_id", "revision")',
    'DROP INDEX IF EXISTS "lead_event_workspace_id_contact_phone"',
    'DROP INDEX IF EXISTS "lead_event_workspace_id_business_scoped_user_id"',
    'CREATE INDEX IF NOT EXISTS "lead_event_workspace_id_contact_phone_revision" '
    'ON "lead_event" ("workspace_id", "contact_phone", "revision")',
    'CREATE INDEX IF NOT EXISTS "lead_event_workspace_id_business_scoped_user_id_revision" '
    'ON "lead_event" ("workspace_id", "business_scoped_user_id", "revision")',
    'CREATE TABLE IF NOT EXISTS "activity" ("workspace_id" VARCHAR(64) NOT NULL, '
    '"bucket" {bigint} NOT NULL, "new_leads" {bigint} NOT NULL DEFAULT 0, '
    '"messages" {bigint} NOT NULL DEFAULT 0, "reached_handoff" {bigint} NOT NULL DEFAULT 0, '
    '"reached_completed" {bigint} NOT NULL DEFAULT 0, '
    '"became_hot" {bigint} NOT NULL DEFAULT 0, PRIMARY KEY ("workspace_id", "bucket"))',
    'CREATE INDEX IF NOT EXISTS "activity_bucket" ON "activity" ("bucket")',
    'INSERT INTO "activity" ("workspace_id", "bucket", "new_leads", "messages", '
    '"reached_handoff", "reached_completed", "became_hot") '
    'SELECT "workspace_id", "bucket", SUM("n"), SUM("m"), SUM("h"), SUM("c"), SUM("hot") '
    f'FROM (SELECT "workspace_id", "created_at" / {_QUARTER_US} AS "bucket", 1 AS "n", '
    '"message_count" AS "m", 0 AS "h", 0 AS "c", 0 AS "hot" FROM "conversation" '
    f'UNION ALL SELECT "workspace_id", "updated_at" / {_QUARTER_US}, 0, 0, '
    'CASE WHEN "state" = \'handoff\' THEN 1 ELSE 0 END, '
    'CASE WHEN "state" = \'completed\' THEN 1 ELSE 0 END, '
    'CASE WHEN "lead_temperature" = \'hot\' THEN 1 ELSE 0 END FROM "conversation" '
    'WHERE "state" IN (\'handoff\', \'completed\') OR "lead_temperature" = \'hot\') AS "counted" '
    'GROUP BY "workspace_id", "bucket"',
)

# GetActivity over every workspace reads each day as a range of the bucket index; with
# only the bucket in it, each of a month's 2,880 quarter-hours per workspace cost a
# lookup of its row for the counts. With the counts in the index the range is the whole
# read (half the time at a million leads in four workspaces; bench/README.md). Writes
# keep it as they keep the row: one entry per quarter-hour a write adds to.
_ACTIVITY_COVERED = (
    'DROP INDEX IF EXISTS "activity_bucket"',
    'CREATE INDEX IF NOT EXISTS "activity_bucket_workspace_id_new_leads_messages_reached__a0136d6" '
    'ON "activity" ("bucket", "workspace_id", "new_leads", "messages", "reached_handoff", '
    '"reached_completed", "became_hot")',
)

# Meta's BSUIDs run to 128 letters and digits after the country and its dot, and a
# parent BSUID may carry ".ENT." too: PostgreSQL would refuse a 131-character BSUID in
# VARCHAR(103) and a 135-character parent in VARCHAR(128), wherever a BSUID is stored.
# Widening a VARCHAR rewrites no table on PostgreSQL; of the indexes, only the partial
# unique one on the conversation's BSUID is rebuilt (its WHERE names the column).
_LONGER_BSUIDS = tuple(_PostgresOnly(sql) for sql in (
    'ALTER TABLE "conversation" ALTER COLUMN "business_scoped_user_id" TYPE VARCHAR(131)',
    'ALTER TABLE "conversation" ALTER COLUMN "parent_business_scoped_user_id" '
    "TYPE VARCHAR(135)",
    'ALTER TABLE "upsert_request" ALTER COLUMN "business_scoped_user_id" TYPE VARCHAR(131)',
    'ALTER TABLE "lead_event" ALTER COLUMN "business_scoped_user_id" TYPE VARCHAR(131)',
))

MIGRATIONS: list[tuple[int, str, Sequence[str]]] = [
    (1, "conversations and request ids", _CONVERSATIONS_AND_REQUEST_IDS),
    (2, "lead counts for GetStats", _LEAD_COUNTS),
    (3, "indexes for lists across workspaces", _INDEXES_ACROSS_WORKSPACES),
    (4, "leads by BSUID, username, phone optional", _LEADS_BY_BSUID),
    (5, "Argentine numbers in WhatsApp's mobile form", _ARGENTINE_MOBILE_FORM),
    (6, "change log for WatchLeads", _CHANGE_LOG),
    (7, "history by lead and activity per quarter-hour", _HISTORY_AND_ACTIVITY),
    (8, "activity counts in the bucket index", _ACTIVITY_COVERED),
    (9, "BSUIDs of up to 128 letters and digits, parents with .ENT.", _LONGER_BSUIDS),
]
LATEST = MIGRATIONS[-1][0]


class SchemaBehind(RuntimeError):
    """The database's schema is older than this server needs."""


def _run(db: peewee.Database, statements: Sequence[str]) -> None:
    sqlite = is_sqlite(db)
    types = _TYPES["sqlite" if sqlite else "postgresql"]
    for sql in statements:
        if not (sqlite and isinstance(sql, _PostgresOnly)):
            db.execute_sql(sql.format(**types))


def _newest(db: peewee.Database) -> int:
    newest = db.execute_sql('SELECT MAX("version") FROM "schema_migrations"').fetchone()[0]
    return int(newest or 0)


def current_version(db: peewee.Database) -> int:
    with db.connection_context():
        if not db.table_exists("schema_migrations"):
            return 0
        return _newest(db)


def migrate(db: peewee.Database) -> tuple[int, int]:
    """Apply every pending migration; return (version before, version after)."""
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
    exclusive = db.atomic("IMMEDIATE") if is_sqlite(db) else db.atomic()
    with db.connection_context(), exclusive:
        if not is_sqlite(db):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
        _run(db, [_SCHEMA_MIGRATIONS])
        before = _newest(db)
        for version, name, statements in MIGRATIONS:
            if version > before:
                _LOGGER.info("migrating to schema %d: %s", version, name)
                _run(db, statements)
                db.execute_sql(
                    'INSERT INTO "schema_migrations" ("version", "name", "applied_at") '
                    f"VALUES ({db.param}, {db.param}, {db.param})",
                    (version, name, time.time_ns() // 1000))
    return before, LATEST


def require_current(db: peewee.Database) -> None:
    """Raise SchemaBehind unless the database is at the latest schema."""
    version = current_version(db)
    if version < LATEST:
        raise SchemaBehind(f"the database schema is at version {version}, this server needs "
                           f"{LATEST}: run `sarah-server migrate` (or start with --migrate)")
