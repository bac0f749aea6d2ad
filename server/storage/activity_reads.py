"""GetActivity's read: the activity counts summed per local day by the database, one
aggregate per day over its range of quarter-hours, so that a month of a busy database
sends back 30 rows, not the 30 x 96 quarter-hours of every workspace (summing those in
Python cost ten times the query at a million leads)."""

import functools
from typing import Any

import peewee

from server.core.activity import ActivityRow
from server.storage.database import is_sqlite


def _sums(table: str = "") -> str:
    """The counts' SUMs, of `table`'s columns when it is named (an alias in a join)."""
    column = f"{table}." if table else ""
    return ", ".join(f'COALESCE(SUM({column}"{name}"), 0)' for name in ActivityRow._fields[1:])


_SUMS = _sums()


@functools.lru_cache(maxsize=64)
def _sql(days: int, one_workspace: bool, param: str) -> str:
    """SQLite's: one SELECT per day, each a range of the bucket index (of the primary key's, for
    one workspace), in one statement: the same text for every call of that shape, so
    the driver's statement cache keeps it prepared."""
    where = f'"bucket" >= {param} AND "bucket" < {param}'
    if one_workspace:
        where = f'"workspace_id" = {param} AND ' + where
    day = f'SELECT {param} AS "start", {_SUMS} FROM "activity" WHERE {where}'
    return " UNION ALL ".join([day] * days)


@functools.lru_cache(maxsize=2)
def _postgres_sql(one_workspace: bool) -> str:
    """PostgreSQL plans each SELECT of a UNION ALL anew on every call: a year of days took
    it about 100 ms of planning for 1.5 ms of reading. The days come instead as two arrays,
    unnested into one row each, joined to the counts and summed: one small plan."""
    workspace = ' AND a."workspace_id" = %s' if one_workspace else ""
    return ('SELECT "day"."start", ' + _sums("a") + ' FROM unnest(%s::bigint[], %s::bigint[]) '
            'AS "day" ("start", "end") LEFT JOIN "activity" AS a ON a."bucket" >= '
            '"day"."start" AND a."bucket" < "day"."end"' + workspace +
            ' GROUP BY "day"."start" ORDER BY "day"."start"')


def per_range(db: peewee.Database, workspace_id: str | None,
              starts: list[int]) -> list[ActivityRow]:
    """The counts of one workspace (None: summed over all) for each range of buckets
    from starts[i] up to starts[i + 1], as one row each whose bucket is the range's
    start."""
    one_workspace = workspace_id is not None
    params: list[Any] = []
    if is_sqlite(db):
        for first, end in zip(starts, starts[1:], strict=False):
            params += [first, *([workspace_id] if one_workspace else []), first, end]
        sql = _sql(len(starts) - 1, one_workspace, db.param)
    else:
        sql = _postgres_sql(one_workspace)
        params = [starts[:-1], starts[1:], *([workspace_id] if one_workspace else [])]
    return [ActivityRow._make(int(value) for value in row)  # PostgreSQL: SUM is a Decimal
            for row in db.execute_sql(sql, params).fetchall()]
