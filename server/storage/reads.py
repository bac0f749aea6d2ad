"""The store's reads: each in a pooled connection of its own, or in one snapshot when it
takes several statements. The hot path runs compiled statements (statements.py); the rest
uses peewee's query builder."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee

from server.core.activity import ActivityRow
from server.core.changes import Event
from server.core.counts import CountRow
from server.core.domain import Lead, LeadFilter, LeadKey
from server.core.identity import Holders
from server.storage import activity_reads, changelog, retention
from server.storage.database import session, snapshot
from server.storage.lead_rows import RowKey, lead_from_tuple, row_key
from server.storage.models import LeadCount
from server.storage.page_leads import PageLeads
from server.storage.statements import LEAD_COLUMNS, PAGE_AFTER, PAGE_FILTERS, Statement, Statements


class Reads:
    """The reads of one peewee database."""

    def __init__(self, db: peewee.Database, sql: Statements):
        self._db = db
        self._sql = sql
        self._page_leads = PageLeads(lead_from_tuple, 1 + LEAD_COLUMNS.index("etag"))

    def holders(self, key: LeadKey) -> Holders:
        """The stored leads that hold `key`'s BSUID and phone (a read: nothing locked)."""
        with session(self._db):
            return self._holders(key)[0]

    def _holders(self, key: LeadKey) -> tuple[Holders, dict[RowKey, int]]:
        """The holders of `key`, and their row ids."""
        ids: dict[RowKey, int] = {}

        def holder(statement: Statement, column: str, value: str) -> Lead | None:
            if not value:
                return None
            row = statement.run(self._db, {"workspace_id": key.workspace_id,
                                           column: value}).fetchone()
            if row is None:
                return None
            lead = lead_from_tuple(row)
            ids[row_key(lead)] = int(row[0])
            return lead

        by_bsuid = holder(self._sql.select_by_bsuid, "business_scoped_user_id",
                          key.business_scoped_user_id)
        by_phone = holder(self._sql.select_lead, "contact_phone", key.contact_phone)
        return Holders(by_bsuid=by_bsuid, by_phone=by_phone), ids

    def history(self, key: LeadKey, meant: Callable[[LeadKey, Holders], Lead | None],
                before: int | None, limit: int) -> list[Event]:
        """Up to `limit` events before revision `before` (None: the newest), newest first,
        of the stored lead `meant` chooses among `key`'s holders; with none, the events
        that carried either key of `key`. One snapshot: a lead that changes identity
        meanwhile is seen either before or after."""
        with self._snapshot():
            holders, ids = self._holders(key)
            lead = meant(key, holders)
            if lead is None:
                return changelog.carrying(self._db, key, before, limit)
            return changelog.of_lead(self._db, ids[row_key(lead)], before, limit)

    def activity(self, workspace_id: str | None, starts: list[int]) -> list[ActivityRow]:
        """The activity of one workspace, or summed over all, for each range of
        quarter-hours from starts[i] up to (not including) starts[i + 1]: a row per range,
        whose bucket is its start."""
        with session(self._db):
            return activity_reads.per_range(self._db, workspace_id, starts)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: its statements all see the same committed state."""
        with session(self._db), snapshot(self._db):
            yield

    def log_head(self) -> tuple[int, int]:
        """(latest committed revision, latest revision retention removed)."""
        with session(self._db):
            return changelog.head(self._db)

    def events_after(self, revision: int, limit: int) -> list[Event]:
        """Up to `limit` logged events after `revision`, in order."""
        with session(self._db):
            return changelog.after(self._db, revision, limit)

    def newest_past(self, at_up_to: int) -> int | None:
        """The revision of the newest event committed at or before `at_up_to`, if any."""
        with session(self._db):
            return retention.newest_past(self._db, at_up_to)

    def inactive(self, last_message_before: int, limit: int) -> list[LeadKey]:
        """The keys of up to `limit` leads silent since before `last_message_before`."""
        with session(self._db):
            return retention.inactive(self._db, last_message_before, limit)

    def page(self, lead_filter: LeadFilter, order_key: str,
             after: tuple[int, str, str, str] | None, limit: int) -> tuple[list[Lead], int]:
        """Return up to `limit` leads ordered by `order_key` descending, then contact_phone,
        business_scoped_user_id and workspace_id descending (a lead has a phone or a BSUID,
        so the order is total), strictly after the position `after`; and the revision
        the page is as of."""
        values: dict[str, Any] = {name: getattr(lead_filter, name) for name in PAGE_FILTERS
                                  if getattr(lead_filter, name) is not None}
        shape = (tuple(values), order_key, after is not None)
        if after is not None:
            values.update(zip(PAGE_AFTER, after, strict=True))
        values["limit"] = limit
        with self._snapshot():
            revision = changelog.head(self._db)[0]
            keys = self._sql.page(*shape, keys_only=True).run(self._db, values).fetchall()
            leads = self._page_leads.known(keys)
            if leads is None:  # a lead not read lately: the page whole, in the same snapshot
                rows = self._sql.page(*shape).run(self._db, values).fetchall()
                leads = self._page_leads.keep(rows)
        return leads, revision

    def counts(self, workspace_id: str | None) -> tuple[list[CountRow], int]:
        """The lead counts of one workspace, or of all (a row per workspace and bucket), and
        the revision they are as of."""
        with session(self._db):
            if workspace_id is None:
                rows = self._sql.counts_of_all.run(self._db, {})
            else:
                rows = self._sql.counts_of_workspace.run(self._db, {"workspace_id": workspace_id})
            found = rows.fetchall()
        # Each row is (revision, *a count row); a workspace without counts has one row of
        # the revision alone.
        revision = int(found[0][0])
        return [CountRow._make(row[1:]) for row in found if row[1] is not None], revision

    def count(self) -> int:
        """How many conversations are stored, in every workspace."""
        with session(self._db):
            total = LeadCount.select(peewee.fn.COALESCE(peewee.fn.SUM(LeadCount.n), 0)).scalar()
        return int(total)
