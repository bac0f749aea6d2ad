"""Lead counts per (workspace, temperature, state), kept in the transaction of every write.

GetStats then reads a handful of rows, however many conversations there are, instead of a
GROUP BY over all of them (73 ms on a million leads even with a covering index).
"""

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import peewee

from server.core.domain import Lead, Stats
from server.storage.models import ConversationRow, LeadCount

_Bucket = tuple[str, str, str]


def _bucket(lead: Lead) -> _Bucket:
    return lead.workspace_id, lead.lead_temperature, lead.state


class CountDeltas:
    """The changes one transaction makes to the counts, applied together at its end."""

    def __init__(self) -> None:
        self._leads: Counter[_Bucket] = Counter()
        self._scores: Counter[_Bucket] = Counter()

    def change(self, old: Lead | None, new: Lead | None) -> None:
        """Count `new` instead of `old` (either may be None: a create or a delete)."""
        if old is not None:
            self._leads[_bucket(old)] -= 1
            self._scores[_bucket(old)] -= old.lead_score
        if new is not None:
            self._leads[_bucket(new)] += 1
            self._scores[_bucket(new)] += new.lead_score

    def apply(self, add_to_count: Callable[[dict[str, Any]], object]) -> None:
        """Add each bucket's change with `add_to_count` (statements.add_to_count)."""
        # Sorted, so two transactions touching the same buckets lock them in one order
        # (no deadlock on PostgreSQL).
        for bucket in sorted(self._leads.keys() | self._scores.keys()):
            leads, scores = self._leads[bucket], self._scores[bucket]
            if leads == 0 and scores == 0:
                continue
            workspace, temperature, state = bucket
            add_to_count({"workspace_id": workspace, "lead_temperature": temperature,
                          "state": state, "n": leads, "score_sum": scores})


def rebuild_counts() -> None:
    """Count every conversation afresh (after a migration or a bulk copy)."""
    LeadCount.delete().execute()
    grouped = ConversationRow.select(
        ConversationRow.workspace_id, ConversationRow.lead_temperature, ConversationRow.state,
        peewee.fn.COUNT(ConversationRow.id), peewee.fn.SUM(ConversationRow.lead_score),
    ).group_by(ConversationRow.workspace_id, ConversationRow.lead_temperature,
               ConversationRow.state)
    LeadCount.insert_from(grouped, [LeadCount.workspace_id, LeadCount.lead_temperature,
                                    LeadCount.state, LeadCount.n, LeadCount.score_sum]).execute()


def select_counts(workspace_id: str | None) -> peewee.Query:
    """The count rows of one workspace, or of all: (temperature, state, n, score_sum)."""
    query = LeadCount.select(LeadCount.lead_temperature, LeadCount.state, LeadCount.n,
                             LeadCount.score_sum)
    if workspace_id is not None:
        query = query.where(LeadCount.workspace_id == workspace_id)
    return query


def stats_of(rows: Iterable[tuple[str, str, int, int]]) -> Stats:
    """Aggregates from select_counts rows."""
    by_temperature: Counter[str] = Counter()
    by_state: Counter[str] = Counter()
    total = score_sum = 0
    for temperature, state, leads, scores in rows:
        by_temperature[temperature] += leads
        by_state[state] += leads
        total += leads
        score_sum += int(scores)  # PostgreSQL may hand back a Decimal
    return Stats(total=total, by_temperature=dict(by_temperature), by_state=dict(by_state),
                 avg_score=score_sum / total if total else 0.0)


def total_leads() -> int:
    return int(LeadCount.select(peewee.fn.COALESCE(peewee.fn.SUM(LeadCount.n), 0)).scalar())
