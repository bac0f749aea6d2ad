"""The count and activity changes of a transaction's writes, written at its end."""

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import peewee

from server.core.activity import ActivityChange
from server.core.counts import CountChange
from server.storage.statements import Statements
from server.storage.writes import WriteTx

_Change = TypeVar("_Change", CountChange, ActivityChange)


def _summed(changes: Iterable[_Change], key_length: int) -> list[_Change]:
    """`changes` (named tuples: a row's key, then amounts) summed per key, in key order,
    without the rows whose amounts sum to nothing."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    made: Callable[..., _Change] | None = None
    for change in changes:
        made = made or type(change)
        amounts = sums.setdefault(tuple(change[:key_length]), [0] * (len(change) - key_length))
        for i, amount in enumerate(change[key_length:]):
            amounts[i] += int(amount)
    return [made(*key, *amounts) for key, amounts in sorted(sums.items())
            if made is not None and any(amounts)]


def write_totals(db: peewee.Database, sql: Statements, txs: Iterable[WriteTx]) -> None:
    """Write the count and activity changes of the writes `txs` of one transaction, summed
    per row, at its end: each such row is locked once, for the shortest time, and in one
    order by every transaction (PostgreSQL: no deadlock between two replicas' groups on the
    few rows every write changes)."""
    txs = list(txs)
    for change in _summed((c for tx in txs for c in tx.count_changes), 3):
        sql.add_to_count.run(db, change._asdict())
    for activity in _summed((a for tx in txs for a in tx.activity_changes), 2):
        sql.add_activity.run(db, activity._asdict())
