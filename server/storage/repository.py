"""The repository: core's Store (core/ports.py) over one peewee database.

Its three jobs live apart: the reads (reads.py); the write operations of a transaction,
WriteTx (writes.py, and totals.py for the counts written at its end); and the transaction
engine that runs a use case's unit of work, with group commit and retries
(transactions.py). Which operations a use case runs, in which order, and why, is the use
case's business (core/service.py).
"""

from collections.abc import Callable
from typing import TypeVar

import peewee

from server.core import ports
from server.core.changes import Event
from server.storage.database import session
from server.storage.models import ConversationRow, LeadCount, bind_models
from server.storage.reads import Reads
from server.storage.statements import Statements
from server.storage.transactions import Transactions
from server.storage.writes import WriteTx

__all__ = ["Repository", "WriteTx"]
_T = TypeVar("_T")


class Repository(Reads):
    """Conversations, their counts, activity and change log in one peewee database."""

    def __init__(self, db: peewee.Database, group_commit: bool = True):
        bind_models(db)
        sql = Statements(db)
        super().__init__(db, sql)
        self._transactions = Transactions(db, sql, group_commit)

    def write(self, work: Callable[[WriteTx], _T]) -> _T:
        """Run `work` in a write transaction and return its result once that committed
        (Transactions.write says how)."""
        return self._transactions.write(work)

    def queued_writes(self) -> int:
        """How many writes wait for the group writer (0 without group commit)."""
        return self._transactions.queued_writes()

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        """Call `listener` with the events of each write that logged some, after it
        committed (in the thread that ran its group: it must be quick)."""
        self._transactions.on_commit(listener)

    def close(self) -> None:
        """Close every connection of every thread (the server has
        stopped calling)."""
        self._transactions.close()

    def rebuild_counts(self) -> None:
        """Count every conversation afresh (after a bulk copy)."""
        c, n = ConversationRow, LeadCount
        grouped = c.select(
            c.workspace_id, c.lead_temperature, c.state,
            peewee.fn.COUNT(c.id), peewee.fn.SUM(c.lead_score),
        ).group_by(c.workspace_id, c.lead_temperature, c.state)
        with session(self._db), self._transactions.transaction():
            n.delete().execute()
            n.insert_from(grouped, [n.workspace_id, n.lead_temperature, n.state, n.n,
                                    n.score_sum]).execute()


def _implements_ports(store: Repository, tx: WriteTx) -> tuple[ports.Store, ports.WriteTx]:
    """Never called: mypy checks here that the repository and its transaction are what
    core's ports ask for."""
    return store, tx
