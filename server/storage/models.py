"""The database schema as peewee models, bound at start-up to the one database in use.

The migrations (migrations.py) make the schema; tests/service/test_migrations.py checks
that these models describe exactly what they make."""

import peewee

database_proxy = peewee.DatabaseProxy()
_EMPTY = peewee.SQL("DEFAULT ''")
_ZERO = peewee.SQL("DEFAULT 0")
# The longest BSUID ("ID." and 128 letters and digits) and parent BSUID ("ID.ENT." and 128).
_BSUID_LEN = 131
_PARENT_BSUID_LEN = 135


class _Model(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class ConversationRow(_Model):
    """One lead's conversation. A lead holds a phone number, a BSUID, or both ("" for
    none); each is unique per workspace where present (the partial indexes below)."""

    id = peewee.AutoField()  # what peewee adds by itself, named so queries can say `.id`
    workspace_id = peewee.CharField(max_length=64)
    contact_phone = peewee.CharField(max_length=20)
    state = peewee.CharField(max_length=16)
    lead_score = peewee.IntegerField()
    lead_temperature = peewee.CharField(max_length=8)
    name = peewee.TextField(null=True)
    business_type = peewee.TextField(null=True)
    team_size = peewee.IntegerField(null=True)
    pain_points = peewee.TextField()  # a JSON array of strings
    goals = peewee.TextField(null=True)
    language = peewee.CharField(max_length=4)
    message_count = peewee.IntegerField()
    created_at = peewee.BigIntegerField()
    updated_at = peewee.BigIntegerField()
    last_message_at = peewee.BigIntegerField()
    etag = peewee.CharField(max_length=32)
    # Migration 4; the database's own default fills the rows stored before it. Migration 9
    # widened both to the longest BSUID and parent (on PostgreSQL; SQLite keeps the old
    # declared widths, which it never enforces).
    business_scoped_user_id = peewee.CharField(max_length=_BSUID_LEN, constraints=[_EMPTY])
    parent_business_scoped_user_id = peewee.CharField(max_length=_PARENT_BSUID_LEN,
                                                      constraints=[_EMPTY])
    username = peewee.CharField(max_length=64, constraints=[_EMPTY])

    class Meta:
        table_name = "conversation"
        indexes = (
            # One per ListLeads order: keyset pages walk these backwards (migration 4
            # added the BSUID, the tie-break after the phone).
            (("workspace_id", "lead_score", "contact_phone", "business_scoped_user_id"), False),
            (("workspace_id", "last_message_at", "contact_phone", "business_scoped_user_id"),
             False),
            (("workspace_id", "created_at", "contact_phone", "business_scoped_user_id"), False),
            (("workspace_id", "updated_at", "contact_phone", "business_scoped_user_id"), False),
            # Lists across every workspace (an operator's key): the same orders.
            (("lead_score", "contact_phone", "business_scoped_user_id", "workspace_id"), False),
            (("last_message_at", "contact_phone", "business_scoped_user_id", "workspace_id"),
             False),
            (("created_at", "contact_phone", "business_scoped_user_id", "workspace_id"), False),
            (("updated_at", "contact_phone", "business_scoped_user_id", "workspace_id"), False),
        )


# Each key is unique per workspace where a lead has it ("" is "none", held by many).
ConversationRow.add_index(ConversationRow.index(
    ConversationRow.workspace_id, ConversationRow.contact_phone, unique=True,
    where=ConversationRow.contact_phone != ""))
ConversationRow.add_index(ConversationRow.index(
    ConversationRow.workspace_id, ConversationRow.business_scoped_user_id, unique=True,
    where=ConversationRow.business_scoped_user_id != ""))


class UpsertRequestRow(_Model):
    """A processed request_id and the conversation it left, kept for 24 hours, under the
    keys that lead had then ("" for a key it lacked): a retry finds it by either key of
    the lead it means, and erasing the lead erases every record holding one of its keys."""

    id = peewee.BigAutoField()
    workspace_id = peewee.CharField(max_length=64)
    contact_phone = peewee.CharField(max_length=20)
    request_id = peewee.CharField(max_length=128)
    created_at = peewee.BigIntegerField(index=True)
    result = peewee.TextField()  # the Lead as JSON
    business_scoped_user_id = peewee.CharField(max_length=_BSUID_LEN, constraints=[_EMPTY])

    class Meta:
        table_name = "upsert_request"
        indexes = (
            (("workspace_id", "contact_phone", "business_scoped_user_id", "request_id"), True),
            (("workspace_id", "business_scoped_user_id", "request_id"), False),
        )


class LeadCount(_Model):
    """How many leads, and their summed score, per (workspace, temperature, state).

    Kept in the same transaction as every write, so GetStats reads a few rows instead of
    scanning every conversation.
    """

    workspace_id = peewee.CharField(max_length=64)
    lead_temperature = peewee.CharField(max_length=8)
    state = peewee.CharField(max_length=16)
    n = peewee.BigIntegerField()
    score_sum = peewee.BigIntegerField()

    class Meta:
        table_name = "lead_count"
        indexes = ((("workspace_id", "lead_temperature", "state"), True),)


class LeadEventRow(_Model):
    """The change log (migration 5): one row per event of a committed write, written in
    that write's transaction. `revision` is handed out by LogHead, not by a sequence, so
    revisions are gapless and in commit order (see changelog.py)."""

    revision = peewee.BigIntegerField(primary_key=True)
    workspace_id = peewee.CharField(max_length=64)
    kind = peewee.CharField(max_length=16)  # upserted or deleted
    contact_phone = peewee.CharField(max_length=20)
    business_scoped_user_id = peewee.CharField(max_length=_BSUID_LEN)
    conversation = peewee.TextField()  # the Lead as JSON (keys only when deleted)
    changed = peewee.TextField()  # a JSON array of field paths
    at = peewee.BigIntegerField(index=True)  # commit time, microseconds
    # Migration 7: the conversation row whose story this is (0: none), which follows the
    # lead through identity changes and merges.
    lead_id = peewee.BigIntegerField(constraints=[_ZERO])

    class Meta:
        table_name = "lead_event"
        indexes = (
            # A lead's history, newest first (ListEvents), and its erasure.
            (("lead_id", "revision"), False),
            # The history of a key no stored lead holds; erasure of events from before
            # lead_id by either key.
            (("workspace_id", "contact_phone", "revision"), False),
            (("workspace_id", "business_scoped_user_id", "revision"), False),
        )


class LogHead(_Model):
    """One row: the latest revision handed out, and the latest one retention removed
    (a watcher may resume from any revision at or after it)."""

    id = peewee.IntegerField(primary_key=True)
    revision = peewee.BigIntegerField()
    pruned_through = peewee.BigIntegerField()

    class Meta:
        table_name = "log_head"


class ActivityBucket(_Model):
    """What happened in one workspace in one UTC quarter-hour (`bucket`: epoch seconds
    // 900), added to in the transaction of each write (migration 7). Counts only, no
    personal data: they outlive retention and erasure. Any local day is a whole set of
    quarter-hours, so GetActivity sums buckets per day in any time zone."""

    workspace_id = peewee.CharField(max_length=64)
    bucket = peewee.BigIntegerField()
    new_leads = peewee.BigIntegerField(constraints=[_ZERO])
    messages = peewee.BigIntegerField(constraints=[_ZERO])
    reached_handoff = peewee.BigIntegerField(constraints=[_ZERO])
    reached_completed = peewee.BigIntegerField(constraints=[_ZERO])
    became_hot = peewee.BigIntegerField(constraints=[_ZERO])

    class Meta:
        table_name = "activity"
        primary_key = peewee.CompositeKey("workspace_id", "bucket")
        indexes = (
            # Every-workspace reads (migration 8): a day's range of buckets, counts included,
            # so the range is the whole read.
            (("bucket", "workspace_id", "new_leads", "messages", "reached_handoff",
              "reached_completed", "became_hot"), False),
        )


# Every table but schema_migrations.
MODELS = (ConversationRow, UpsertRequestRow, LeadCount, LeadEventRow, LogHead, ActivityBucket)


def bind_models(db: peewee.Database) -> None:
    """Point every model at `db`: one database per process, chosen at start-up."""
    database_proxy.initialize(db)
