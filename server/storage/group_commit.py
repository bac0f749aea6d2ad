"""Group commit: the writes of one process run in groups, one transaction a group, so the
database pays one commit for the group, not one a call.

Each caller waits until the transaction holding its write has committed (or failed), so an
acknowledged write is as durable as before. No writer thread: the caller that finds no
write running leads, running in its own thread whatever has queued (itself included, at
most `max_group` writes, in arrival order); the callers that arrive meanwhile queue and
wait. When its group has committed, the leader hands the lead to the oldest caller still
waiting, whose turn takes everything queued by then, and returns. No added delay: a group
is whatever queued while the previous one ran (PostgreSQL's commit_delay, InnoDB's binlog
group commit and rqlite's queued writes work the same way). A writer thread cost every
write two more thread hand-offs, each a futex wake and a fight for the GIL (perf on
UpsertState: half the server's CPU was the kernel switching threads; bench/README.md).
What a group does in the database is Transactions._write_group's (transactions.py;
GroupWriter's `run_group`); here live only the queue and the callers' turns.
"""

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.core.errors import Unavailable

_LOGGER = logging.getLogger(__name__)
MAX_GROUP = 64


class Alone:
    """The answer "run this write again in a transaction of its own": its group could not
    commit because of a neighbour (or the database), and it must not fail for that."""


ALONE = Alone()


def _held() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class Job:
    """One queued write: the unit of work, and where its caller waits for the outcome or
    for its turn to lead. Plain locks rather than a concurrent.futures.Future: waking a
    caller is a lock's release, where a Future wakes it through a Condition, a lock and a
    waiter list (the profiles: bench/README.md)."""

    work: Callable[[Any], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    leads: bool = False  # its caller is to run the next group
    # Taken by whoever comes first: a leader, to run the job, or its caller, to withdraw it.
    _claim: threading.Lock = field(default_factory=threading.Lock)
    # Released once: when the job is settled, or when its caller is to lead.
    _wake: threading.Lock = field(default_factory=_held)

    def settle(self, result: Any) -> None:
        self.result, self.done = result, True
        self._wake.release()

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True
        self._wake.release()

    def claim(self) -> bool:
        """True for the first to claim the job (a leader runs it; its caller withdraws it)."""
        return self._claim.acquire(blocking=False)

    def claimed(self) -> bool:
        return self._claim.locked()

    def wait(self, timeout: float = -1) -> bool:
        """Wait until settled or asked to lead; False after `timeout`."""
        return self._wake.acquire(timeout=timeout)

    def outcome(self) -> Any:
        """Its result once settled, or its error raised."""
        if self.error is not None:
            raise self.error
        return self.result


class GroupWriter:
    """Groups the writes of the calling threads. `run_group` runs a group of jobs in one
    transaction and settles every job: a result, ALONE, or an exception."""

    def __init__(self, run_group: Callable[[list[Job]], None], queue_wait_s: float,
                 max_group: int = MAX_GROUP):
        self._run_group = run_group
        self._queue_wait_s = queue_wait_s
        self._max_group = max_group
        self._turns = threading.Lock()  # guards the queue and the lead
        self._queue: collections.deque[Job] = collections.deque()
        self._leading = False
        self._leader: int | None = None  # the thread running a group now

    def queued(self) -> int:
        """How many writes wait for a group (not counting the group running)."""
        with self._turns:
            return sum(not job.claimed() for job in self._queue)

    def in_writer(self) -> bool:
        """True in a thread running a group (a write from there cannot queue behind itself)."""
        return self._leader == threading.get_ident()

    def call(self, work: Callable[[Any], Any]) -> Any:
        """Queue `work` and return what it returned once its group committed (or ALONE), or
        raise what it raised. A write still queued after `queue_wait_s` is withdrawn with
        Unavailable, as the writer lock's wait was; one already running is waited for."""
        job = Job(work)
        with self._turns:
            self._queue.append(job)
            leads = not self._leading
            self._leading = True
        while True:
            if leads:
                self._lead()
                if job.done:
                    break
                # More than a group queued before it: its turn comes with a later one.
            if not job.wait(self._queue_wait_s):
                with self._turns:  # a leader hands the lead on under this lock too
                    if not (job.leads or job.done) and job.claim():
                        raise Unavailable("the database is busy with other writes; retry "
                                          "shortly")
                job.wait()  # settled, asked to lead, or running in a group: it is coming
            if job.done:
                break
            leads, job.leads = True, False  # woken to lead
        return job.outcome()

    def _lead(self) -> None:
        """Run one group: what has queued, up to max_group, in arrival order (the caller's
        own job among them unless more than that queued before it); then hand the lead to
        the oldest caller still waiting, or put it down."""
        with self._turns:
            taken = [self._queue.popleft() for _ in range(min(len(self._queue),
                                                              self._max_group))]
        # A caller that gave up waiting has withdrawn its job: it is not run.
        group = [job for job in taken if job.claim()]
        self._leader = threading.get_ident()
        try:
            if group:
                self._run(group)
        finally:
            self._leader = None
            with self._turns:
                while self._queue and self._queue[0].claimed():
                    self._queue.popleft()  # withdrawn
                if self._queue:
                    following = self._queue[0]
                    following.leads = True
                    following._wake.release()
                else:
                    self._leading = False

    def _run(self, group: list[Job]) -> None:
        try:
            self._run_group(group)
        except BaseException as exc:  # every caller in the group waits for an outcome
            _LOGGER.exception("a group of writes failed unexpectedly")
            for job in group:
                if not job.done:
                    job.fail(exc)
