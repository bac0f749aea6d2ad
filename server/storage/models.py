"""The database schema as peewee models, bound at start-up to the one database in use.

The migrations (migrations.py) make the schema; tests/service/test_migrations.py checks
that these models describe exactly what they make."""

import peewee

database_proxy = peewee.DatabaseProxy()


class _Model(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class ConversationRow(_Model):
    """One lead's conversation; unique per (workspace_id, contact_phone)."""

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

    class Meta:
        table_name = "conversation"
        indexes = (
            (("workspace_id", "contact_phone"), True),
            # One per ListLeads order: keyset pages walk these backwards.
            (("workspace_id", "lead_score", "contact_phone"), False),
            (("workspace_id", "last_message_at", "contact_phone"), False),
            (("workspace_id", "created_at", "contact_phone"), False),
            (("workspace_id", "updated_at", "contact_phone"), False),
            # Lists across every workspace (an operator's key): the same orders (migration 3).
            (("lead_score", "contact_phone", "workspace_id"), False),
            (("last_message_at", "contact_phone", "workspace_id"), False),
            (("created_at", "contact_phone", "workspace_id"), False),
            (("updated_at", "contact_phone", "workspace_id"), False),
        )


class UpsertRequestRow(_Model):
    """A processed request_id and the conversation it left, kept for 24 hours."""

    id = peewee.BigAutoField()
    workspace_id = peewee.CharField(max_length=64)
    contact_phone = peewee.CharField(max_length=20)
    request_id = peewee.CharField(max_length=128)
    created_at = peewee.BigIntegerField(index=True)
    result = peewee.TextField()  # the Lead as JSON

    class Meta:
        table_name = "upsert_request"
        indexes = ((("workspace_id", "contact_phone", "request_id"), True),)


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


MODELS = (ConversationRow, UpsertRequestRow, LeadCount)  # every table but schema_migrations


def bind_models(db: peewee.Database) -> None:
    """Point every model at `db`: one database per process, chosen at start-up."""
    database_proxy.initialize(db)
