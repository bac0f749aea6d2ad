"""The reads that must stay fast on a million leads use their indexes, as SQLite plans
them (its planner, without ANALYZE statistics, plans the same on any data): a scan here
is a query whose cost grows with the database. The bench's scale table measures them."""

from pathlib import Path

import peewee
import pytest

from server.storage import activity_reads
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.models import bind_models
from server.storage.statements import Statements


@pytest.fixture
def database(tmp_path: Path) -> peewee.Database:
    db = open_database(f"sqlite:///{tmp_path / 'plans.db'}", pool_size=1)
    migrate(db)
    bind_models(db)
    return db


def _plan(db: peewee.Database, sql: str, params: tuple[object, ...]) -> list[str]:
    return [row[-1] for row in db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]


@pytest.mark.parametrize(("statement", "index"), [
    ("select_lead", "conversation_workspace_id_contact_phone (workspace_id=? AND "
                    "contact_phone=?)"),
    ("lock_lead", "conversation_workspace_id_contact_phone (workspace_id=? AND "
                  "contact_phone=?)"),
    ("select_by_bsuid", "conversation_workspace_id_business_scoped_user_id (workspace_id=? "
                        "AND business_scoped_user_id=?)"),
])
def test_a_lead_is_found_by_its_keys_unique_index(database: peewee.Database, statement: str,
                                                   index: str) -> None:
    # The unique indexes are partial (WHERE key != ''): a query must name that condition
    # for the planner to use them, or it walks every lead of the workspace.
    sql = getattr(Statements(database), statement).sql
    assert _plan(database, sql, ("", "+6281200000000")) == [f"SEARCH t1 USING INDEX {index}"]


@pytest.mark.parametrize("workspace_id", [None, "toko"])
def test_activity_reads_each_day_as_one_range_of_an_index(database: peewee.Database,
                                                          workspace_id: str | None) -> None:
    sql = activity_reads._sql(30, workspace_id is not None, database.param)
    params = [0, *([] if workspace_id is None else [workspace_id]), 0, 96] * 30
    searches = [step for step in _plan(database, sql, tuple(params)) if "activity" in step]
    # One workspace: its primary key's range; every workspace: the bucket index's, which
    # holds the counts (migration 8), so the range is the whole read.
    expected = ("INDEX sqlite_autoindex_activity_1 (workspace_id=? AND bucket>? AND bucket<?)"
                if workspace_id is not None else "COVERING INDEX activity_bucket_workspace_id_"
                "new_leads_messages_reached__a0136d6 (bucket>? AND bucket<?)")
    assert searches == [f"SEARCH activity USING {expected}"] * 30
