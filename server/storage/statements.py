"""The hot path's SQL, generated once per database by peewee from the models.

Peewee builds a query's SQL anew on every call, and for GetState that costs more than
SQLite takes to run it (the profiles: bench/README.md, "Where the time goes"). The
statements of GetState, UpsertState, GetStats and the activity counts never change shape,
so peewee generates each one once, here, and the repository runs the text with
execute_sql: the models stay the one source of the schema.
"""

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Any

import peewee

from server.core.domain import Lead
from server.storage.models import (
    ActivityBucket,
    ConversationRow,
    LeadCount,
    LeadEventRow,
    LogHead,
    UpsertRequestRow,
)

LEAD_COLUMNS = [f.name for f in fields(Lead)]
EVENT_COLUMNS = [name for name in LeadEventRow._meta.sorted_field_names]
# What execute_sql wraps the driver in, turning its errors into peewee's.
_DRIVER_ERRORS: AbstractContextManager[None] = vars(peewee)["__exception_wrapper__"]


@dataclass(frozen=True)
class Statement:
    """SQL text and the order in which its parameters are named."""

    sql: str
    names: tuple[str, ...]

    def run(self, db: peewee.Database, values: Mapping[str, Any]) -> Any:
        """Execute the statement; returns the driver's cursor."""
        return db.execute_sql(self.sql, [values[name] for name in self.names])

    def run_many(self, db: peewee.Database, rows: Iterable[Mapping[str, Any]]) -> None:
        """Execute the statement once per row, in one driver call (executemany), with the
        driver's errors made peewee's as execute_sql makes them."""
        params = [[row[name] for name in self.names] for row in rows]
        with _DRIVER_ERRORS:
            db.cursor().executemany(self.sql, params)


def _compile(build: Callable[[dict[str, Any]], peewee.Query], model: type[peewee.Model],
             names: list[str], numbers: frozenset[str] = frozenset()) -> Statement:
    """Let peewee write the query with a distinct stand-in for each named value, then read
    from its parameter list which name goes where. A value is a number if its name is a
    numeric field of `model` or is in `numbers` (peewee converts a value compared with a
    field to the field's type)."""
    stand_ins: dict[str, Any] = {}
    for i, name in enumerate(names):
        field = model._meta.fields.get(name)
        numeric = isinstance(field, peewee.IntegerField) or name in numbers
        stand_ins[name] = 7_000_000_000_000 + i if numeric else f"\x00stand-in {i}\x00"
    sql, params = build(stand_ins).sql()
    by_value = {value: name for name, value in stand_ins.items()}
    return Statement(sql, tuple(by_value[param] for param in params))


_EMPTY = peewee.SQL("''")  # in the SQL text, not a parameter: a planner must see it
_ONE = peewee.SQL("1")  # the log head's one row, in the text: no named value stands for it

# ListLeads' filters by LeadFilter's field names: the condition each puts on a conversation.
PAGE_FILTERS: dict[str, Callable[[Any], peewee.Expression]] = {
    "workspace_id": lambda v: ConversationRow.workspace_id == v,
    "temperature": lambda v: ConversationRow.lead_temperature == v,
    "state": lambda v: ConversationRow.state == v,
    "min_score": lambda v: ConversationRow.lead_score >= v,
}
# The position a page starts after: (order key value, contact_phone,
# business_scoped_user_id, workspace_id) of the previous page's last lead.
PAGE_AFTER = ("after_key", "after_phone", "after_bsuid", "after_workspace")
_PAGE_NUMBERS = frozenset({"min_score", "after_key", "limit"})


class Statements:
    """The compiled statements for one database (its dialect and placeholders)."""

    def __init__(self, db: peewee.Database):
        c, r, n = ConversationRow, UpsertRequestRow, LeadCount
        key = ["workspace_id", "contact_phone"]
        bsuid_key = ["workspace_id", "business_scoped_user_id"]
        lead_fields = [getattr(c, name) for name in LEAD_COLUMNS]

        # Each key's unique index is partial (WHERE key != '', migration 4): a planner uses
        # it only for a query that says so itself, since it cannot know a parameter's
        # value when it plans; without that SQLite walks the workspace's leads.
        def select_lead(v: dict[str, Any]) -> "peewee.ModelSelect[ConversationRow]":
            return c.select(c.id, *lead_fields).where(
                (c.workspace_id == v["workspace_id"]) & (c.contact_phone == v["contact_phone"])
                & (c.contact_phone != _EMPTY))

        def select_by_bsuid(v: dict[str, Any]) -> "peewee.ModelSelect[ConversationRow]":
            return c.select(c.id, *lead_fields).where(
                (c.workspace_id == v["workspace_id"])
                & (c.business_scoped_user_id == v["business_scoped_user_id"])
                & (c.business_scoped_user_id != _EMPTY))

        self.select_lead = _compile(select_lead, c, key)
        self.lock_lead = _compile(
            lambda v: select_lead(v).for_update() if db.for_update else select_lead(v), c, key)
        self.select_by_bsuid = _compile(select_by_bsuid, c, bsuid_key)
        self.lock_by_bsuid = _compile(
            lambda v: select_by_bsuid(v).for_update() if db.for_update else select_by_bsuid(v),
            c, bsuid_key)
        self.insert_lead = _compile(
            lambda v: c.insert({getattr(c, k): v[k] for k in LEAD_COLUMNS}), c, LEAD_COLUMNS)
        self.update_lead = _compile(
            lambda v: c.update({getattr(c, k): v[k] for k in LEAD_COLUMNS}).where(c.id == v["id"]),
            c, [*LEAD_COLUMNS, "id"])
        self.select_request = _compile(
            lambda v: r.select(r.result).where(
                (r.workspace_id == v["workspace_id"]) & (r.contact_phone == v["contact_phone"])
                & (r.request_id == v["request_id"]) & (r.created_at > v["since"])),
            r, [*key, "request_id", "since"])
        self.select_request_by_bsuid = _compile(
            lambda v: r.select(r.result).where(
                (r.workspace_id == v["workspace_id"])
                & (r.business_scoped_user_id == v["business_scoped_user_id"])
                & (r.request_id == v["request_id"]) & (r.created_at > v["since"])),
            r, [*bsuid_key, "request_id", "since"])
        self.save_request = _compile(
            lambda v: r.insert(workspace_id=v["workspace_id"], contact_phone=v["contact_phone"],
                               business_scoped_user_id=v["business_scoped_user_id"],
                               request_id=v["request_id"], created_at=v["created_at"],
                               result=v["result"]).on_conflict(
                conflict_target=[r.workspace_id, r.contact_phone, r.business_scoped_user_id,
                                 r.request_id],
                update={r.created_at: peewee.EXCLUDED.created_at,
                        r.result: peewee.EXCLUDED.result}),
            r, [*key, "business_scoped_user_id", "request_id", "created_at", "result"])
        # GetStats' counts with the revision they are as of, in one statement (one
        # statement sees one state of the database): no read transaction of its own,
        # whose BEGIN and COMMIT cost as much as the reads. The log's head is one row,
        # joined to every count row; a workspace with none still has the head's row.
        h = LogHead

        def with_head(on: peewee.Expression) -> "peewee.ModelSelect[LogHead]":
            return (h.select(h.revision, n.lead_temperature, n.state, n.n, n.score_sum)
                    .join(n, peewee.JOIN.LEFT_OUTER, on=on).where(h.id == _ONE))

        self.counts_of_workspace = _compile(
            lambda v: with_head(n.workspace_id == v["workspace_id"]), n, ["workspace_id"])
        self.counts_of_all = _compile(lambda v: with_head(n.n.is_null(False)), n, [])
        self.add_to_count = _compile(
            lambda v: n.insert(workspace_id=v["workspace_id"],
                               lead_temperature=v["lead_temperature"], state=v["state"],
                               n=v["n"], score_sum=v["score_sum"]).on_conflict(
                conflict_target=[n.workspace_id, n.lead_temperature, n.state],
                update={n.n: n.n + peewee.EXCLUDED.n,
                        n.score_sum: n.score_sum + peewee.EXCLUDED.score_sum}),
            n, ["workspace_id", "lead_temperature", "state", "n", "score_sum"])
        a = ActivityBucket
        counted = ["new_leads", "messages", "reached_handoff", "reached_completed", "became_hot"]
        self.add_activity = _compile(
            lambda v: a.insert({getattr(a, k): v[k] for k in ["workspace_id", "bucket", *counted]}
                               ).on_conflict(
                conflict_target=[a.workspace_id, a.bucket],
                update={getattr(a, k): getattr(a, k) + getattr(peewee.EXCLUDED, k)
                        for k in counted}),
            a, ["workspace_id", "bucket", *counted])
        # The change log's head (changelog.py): `n` revisions taken, the last one returned.
        # Row 1 is there from the migration that made the table (migrations.py) on.
        self.advance_head = Statement(
            f'UPDATE "log_head" SET "revision" = "revision" + {db.param} WHERE "id" = 1 '
            'RETURNING "revision"', ("n",))
        self._pages: dict[tuple[tuple[str, ...], str, bool, bool], Statement] = {}
        e = LeadEventRow
        # Without RETURNING (peewee adds one on PostgreSQL): run_many sends it per event.
        self.insert_event = _compile(
            lambda v: e.insert({getattr(e, k): v[k] for k in EVENT_COLUMNS}).returning(),
            e, EVENT_COLUMNS)

    def page(self, filters: tuple[str, ...], order_key: str, after: bool,
             keys_only: bool = False) -> Statement:
        """ListLeads' query with the PAGE_FILTERS named in `filters`, ordered by `order_key`
        descending then by the keys, and (with `after`) starting past PAGE_AFTER. Its rows
        are (id, *LEAD_COLUMNS), or with `keys_only` (id, etag); `limit` names how many.
        Compiled at its first use: a handful of shapes are used, of 256 possible."""
        shape = (filters, order_key, after, keys_only)
        found = self._pages.get(shape)
        if found is None:  # two threads may both compile it: the same text, either kept
            found = self._pages[shape] = self._compile_page(*shape)
        return found

    def _compile_page(self, filters: tuple[str, ...], order_key: str, after: bool,
                      keys_only: bool) -> Statement:
        c = ConversationRow
        key = getattr(c, order_key)
        position = peewee.Tuple(key, c.contact_phone, c.business_scoped_user_id, c.workspace_id)
        columns = [c.etag] if keys_only else [getattr(c, name) for name in LEAD_COLUMNS]

        def build(v: dict[str, Any]) -> "peewee.ModelSelect[ConversationRow]":
            where = [PAGE_FILTERS[name](v[name]) for name in filters]
            if after:
                where.append(position < peewee.Tuple(*(v[name] for name in PAGE_AFTER)))
            query = c.select(c.id, *columns)
            if where:  # peewee refuses where() of nothing
                query = query.where(*where)
            return (query.order_by(key.desc(), c.contact_phone.desc(),
                                   c.business_scoped_user_id.desc(), c.workspace_id.desc())
                    .limit(v["limit"]))

        names = [*filters, *(PAGE_AFTER if after else ()), "limit"]
        return _compile(build, c, names, _PAGE_NUMBERS)
