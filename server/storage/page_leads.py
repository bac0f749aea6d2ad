"""The Leads of rows ListLeads read lately, by row id and etag, so a page seen before is
read as (id, etag) pairs alone.

A dashboard reads the same pages over and over. Reading a page's rows whole, twenty
columns each, cost several times the keyset walk itself (SQLite, 51 rows: ~5x reading
(id, etag)), and building a Lead from each (pain_points' JSON and all) as much again. A
row's etag changes on every write of it (the contract's optimistic concurrency; random,
so a deleted and re-created lead never reuses one), so (id, etag) names one version of
one row: a Lead kept under it is that row as it is.
"""

import threading
from collections.abc import Callable, Sequence
from typing import Any

from server.core.domain import Lead

_Key = tuple[int, str]


class PageLeads:
    """At most `most` Leads by (row id, etag); the oldest kept goes first."""

    def __init__(self, lead_of_row: Callable[[tuple[Any, ...]], Lead], etag_at: int,
                 most: int = 1024):
        self._lead_of_row = lead_of_row
        self._etag_at = etag_at  # where a whole row holds its etag
        self._most = most
        self._leads: dict[_Key, Lead] = {}
        self._lock = threading.Lock()  # for eviction's walk of the dict; reads take none

    def known(self, keys: Sequence[tuple[Any, ...]]) -> list[Lead] | None:
        """The Leads of rows read as (id, etag), in their order; None if any is not kept
        (the page must then be read whole)."""
        leads = []
        for key in keys:
            lead = self._leads.get((key[0], key[1]))
            if lead is None:
                return None
            leads.append(lead)
        return leads

    def keep(self, rows: Sequence[tuple[Any, ...]]) -> list[Lead]:
        """The Leads of whole rows (id, *LEAD_COLUMNS), kept for the next read."""
        leads = [self._lead_of_row(row) for row in rows]
        with self._lock:
            for row, lead in zip(rows, leads, strict=True):
                self._leads[(row[0], row[self._etag_at])] = lead
            while len(self._leads) > self._most:
                del self._leads[next(iter(self._leads))]
        return leads
