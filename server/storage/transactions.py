"""The transaction engine: runs a unit of work (a function of a WriteTx) in a write
transaction, alone or with the writes queued beside it (group commit: one transaction for
the group; the queue and the callers' turns are group_commit.py's), retrying a write that lost an
insert race or was PostgreSQL's deadlock victim, and holding SQLite's one writer (this
process's threads on a lock, other processes on a file lock). A unit of work can run up to
six times: three tries in its group, then three alone; and again each time a neighbour in
its group takes the group's transaction down (_write_group).
"""

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, TypeVar, cast

import peewee

from server.core.changes import Event
from server.core.errors import Unavailable
from server.storage.database import LOCK_WAIT_MS, is_sqlite, session
from server.storage.errors import as_unavailable, is_deadlock
from server.storage.group_commit import ALONE, Alone, GroupWriter, Job
from server.storage.statements import Statements
from server.storage.totals import write_totals
from server.storage.writer_lock import WriterLock
from server.storage.writes import WriteTx

_LOGGER = logging.getLogger(__name__)
# Tries of a write that lost an insert race or was PostgreSQL's deadlock victim.
_RETRIES = 3
_T = TypeVar("_T")


class _Outcome(NamedTuple):
    """What one write of a group came to: its result or its error (raised before it
    wrote anything)."""

    result: object
    error: Exception | None
    tx: WriteTx | None  # what it wrote, if it succeeded


class _Undo(Exception):
    """A write of a group took the group's transaction down (rolled back as it leaves)."""


def _copy(exc: Exception) -> Exception:
    """`exc` for one of a group's callers: each raises its own, on its own thread."""
    try:
        mine = copy.copy(exc)
    except Exception:  # an exception that cannot be rebuilt from its args: shared, then
        return exc
    mine.__cause__ = exc
    return mine


class Transactions:
    """The write transactions of one peewee database."""

    def __init__(self, db: peewee.Database, sql: Statements, group_commit: bool = True):
        self._db = db
        self._sql = sql
        self._writers = threading.Lock()
        # Writers of the other processes on the same file (--workers) queue here too.
        self._processes = (WriterLock(Path(db.database)) if is_sqlite(db)
                           and db.database not in ("", ":memory:") else None)
        self._group = GroupWriter(self._write_group, queue_wait_s=LOCK_WAIT_MS / 1000
                                  ) if group_commit else None
        self._commit_listeners: list[Callable[[list[Event]], None]] = []

    def on_commit(self, listener: Callable[[list[Event]], None]) -> None:
        """Call `listener` with the events of each write that logged some, after it
        committed (in the thread that ran its group: it must be quick)."""
        self._commit_listeners.append(listener)

    def close(self) -> None:
        """Close every connection of every thread (the server has
        stopped calling)."""
        # Nothing of group commit to stop: groups run in their callers' threads.
        close_all = getattr(self._db, "close_all", self._db.close)
        close_all()
        if self._processes is not None:
            self._processes.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction, in the caller's session (database.session)."""
        if not is_sqlite(self._db):
            with self._db.atomic():
                yield
            return
        # SQLite has one writer at a time. Writers of this process queue on a lock, in
        # order, rather than in SQLite's busy handler, which sleeps up to 100 ms a try
        # (that was UpsertState's p99). The lock is taken up front (BEGIN IMMEDIATE): a
        # deferred transaction that upgrades to a write fails at once with "database is
        # locked" when another process writes.
        # Other processes' writers queue on a file lock (writer_lock.py says why), taken
        # within what is left of the same wait.
        deadline = time.monotonic() + LOCK_WAIT_MS / 1000
        if not self._writers.acquire(timeout=LOCK_WAIT_MS / 1000):
            raise Unavailable("the database is busy with other writes; retry shortly")
        try:
            if self._processes is not None and not self._processes.acquire(
                    max(0.0, deadline - time.monotonic())):
                raise Unavailable("the database is busy with other writes; retry shortly")
            try:
                with self._db.atomic("IMMEDIATE"):
                    yield
            finally:
                if self._processes is not None:
                    self._processes.release()
        finally:
            self._writers.release()

    def write(self, work: Callable[[WriteTx], _T]) -> _T:
        """Run `work` in a write transaction and return its result once that committed; all
        of it is written or none. With group commit, the transaction also holds the writes
        queued beside it (group_commit.py), and a failing write fails alone
        (_write_group). `work` may run more than once (a concurrent first insert of the
        same key won, or its group was rolled back for another write's sake), so it must
        read what it needs through the transaction it is given."""
        if self._group is None or self._group.in_writer():
            return self._write_alone(work)
        result = self._group.call(work)
        if isinstance(result, Alone):
            return self._write_alone(work)
        return cast(_T, result)

    def queued_writes(self) -> int:
        """How many writes wait for the group writer (0 without group commit)."""
        return 0 if self._group is None else self._group.queued()

    def _write_alone(self, work: Callable[[WriteTx], _T]) -> _T:
        """`work` in a transaction of its own."""
        for attempt in range(_RETRIES):
            try:
                with session(self._db), self.transaction():
                    tx = WriteTx(self._db, self._sql)
                    result = work(tx)
                    write_totals(self._db, self._sql, [tx])
                self._notify(tx.appended)
                return result
            except peewee.IntegrityError as exc:
                # Only without SQLite's up-front lock: two first writes of one lead (or one
                # request_id) raced; the retry sees the winner's row.
                if attempt == _RETRIES - 1:
                    raise Unavailable(f"write conflict, retry: {exc}") from exc
            except Unavailable as exc:
                # PostgreSQL broke a lock cycle with another replica's group of writes by
                # failing this one: it did nothing wrong, so it runs again.
                if not is_deadlock(exc) or attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _write_group(self, jobs: list[Job]) -> None:
        """Run `jobs` in one transaction and settle each job once it committed: its result,
        or its own exception. A write that fails before it wrote anything (an etag
        mismatch, a lead not found) fails alone, with nothing to undo. One that wrote and
        then failed, or that the database failed, takes the transaction down, and the
        group runs again in a new one without it (with it, for a lost insert race): what
        the others see and commit is as if it had never run, as a savepoint per write
        would have it, without paying for one on every write (SQLite copies each page a
        write changes inside a savepoint to a sub-journal first: bench/README.md). If the
        transaction cannot go on (PostgreSQL chose it to break a deadlock, or the database
        broke it), nothing of it is kept and every job gets ALONE; if it failed to begin
        or to commit, every job gets that error, as each write would have on its own."""
        group, failed = list(jobs), dict[int, Exception]()
        tries = dict.fromkeys(map(id, jobs), 0)
        while group:
            outcomes = self._try_group(group, tries, failed)
            if outcomes is None:  # rolled back for one write's sake: the rest run again
                group = [job for job in group if id(job) not in failed]
                continue
            if isinstance(outcomes, Alone):
                for job in group:
                    job.settle(ALONE)
            elif isinstance(outcomes, Exception):
                for job in group:
                    job.fail(_copy(outcomes))
            else:
                self._notify([event for outcome in outcomes if outcome.tx
                              for event in outcome.tx.appended])
                for job, outcome in zip(group, outcomes, strict=True):
                    if outcome.error is None:
                        job.settle(outcome.result)
                    else:
                        job.fail(outcome.error)
            break
        for job in jobs:
            if id(job) in failed:
                job.fail(failed[id(job)])

    def _try_group(self, group: list[Job], tries: dict[int, int], failed: dict[int, Exception]
                   ) -> list[_Outcome] | Alone | Exception | None:
        """`group` in one transaction: each job's outcome once that committed; None if a
        write took the transaction down (rolled back; `failed` now holds its error, or
        `tries` one more try of a lost race); ALONE or an exception for every job."""
        outcomes: list[_Outcome] = []
        undo: tuple[Job, Exception] | None = None
        broken = False
        try:
            with session(self._db), self.transaction():
                try:
                    for job in group:
                        tx = WriteTx(self._db, self._sql)
                        try:
                            result = job.work(tx)
                        except Exception as exc:
                            if tx.wrote or isinstance(exc, peewee.PeeweeException):
                                undo = (job, exc)
                                raise _Undo from exc
                            outcomes.append(_Outcome(None, exc, None))  # its own, undone
                            continue
                        outcomes.append(_Outcome(result, None, tx))
                    write_totals(self._db, self._sql,
                                 (outcome.tx for outcome in outcomes if outcome.tx))
                except peewee.PeeweeException:
                    broken = True
                    raise
        except peewee.IntegrityError:  # only a constraint checked at commit: retry alone
            return ALONE
        except Exception as exc:
            if undo is not None:
                return self._undone(*undo, tries, failed)
            return ALONE if broken else exc
        return outcomes

    @staticmethod
    def _undone(job: Job, error: Exception, tries: dict[int, int],
                failed: dict[int, Exception]) -> Alone | None:
        """What comes of a write that took its group's transaction down: ALONE for the
        whole group when PostgreSQL broke a deadlock with it (this group's locks must go:
        another replica's group waits), else None, the group to run again: with it for
        another try of a lost insert race, else without it, its error in `failed`."""
        if is_deadlock(error):
            return ALONE
        if isinstance(error, peewee.IntegrityError):  # an insert race: see _write_alone
            tries[id(job)] += 1
            if tries[id(job)] < _RETRIES:
                return None
            failed[id(job)] = Unavailable(f"write conflict, retry: {error}")
        elif isinstance(error, peewee.PeeweeException):
            failed[id(job)] = as_unavailable(error)
        else:
            failed[id(job)] = error  # the write's own, raised after it wrote
        return None

    def _notify(self, events: list[Event]) -> None:
        """Tell the commit listeners about committed events, if there are any."""
        if not events:
            return
        for listener in self._commit_listeners:
            try:
                listener(events)
            except Exception:  # the writes committed: a listener's failure is not theirs
                _LOGGER.exception("a commit listener failed")
