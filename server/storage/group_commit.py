"""Group commit: the writes of one process, queued to one writer thread that runs what has
queued up in one transaction, so the database pays one commit for the group, not one a call.

Each caller waits until the transaction holding its write has committed (or failed), so an
acknowledged write is as durable as before. The writer adds no delay: it takes whatever
queued while its previous commit ran (PostgreSQL's commit_delay, InnoDB's binlog group
commit and rqlite's queued writes work the same way), at most `max_group` writes, in
arrival order. What a group does in the database is Transactions._write_group's
(transactions.py; GroupWriter's `run_group`); here live only the queue, the thread and
the callers' waiting.
"""

import logging
import queue
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


@dataclass
class Job:
    """One queued write: the unit of work, and where its caller waits for the outcome.
    Plain locks rather than a concurrent.futures.Future: the writer thread wakes every
    caller, and a Future wakes its caller through a Condition, a lock and a waiter list
    where a released lock is all it takes (the profiles: bench/README.md)."""

    work: Callable[[Any], Any]
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    # Taken by whoever comes first: the writer, to run the job, or its caller, to withdraw it.
    _claim: threading.Lock = field(default_factory=threading.Lock)
    _settled: threading.Lock = field(default_factory=_held)

    def settle(self, result: Any) -> None:
        self.result, self.done = result, True
        self._settled.release()

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True
        self._settled.release()

    def claim(self) -> bool:
        """True for the first to claim the job (the writer runs it; its caller withdraws it)."""
        return self._claim.acquire(blocking=False)

    def outcome(self, timeout: float = -1) -> tuple[bool, Any]:
        """(True, result) once settled, raising its error; (False, None) after `timeout`."""
        if not self._settled.acquire(timeout=timeout):
            return False, None
        if self.error is not None:
            raise self.error
        return True, self.result


_STOP = Job(work=lambda _tx: None)


class GroupWriter:
    """One writer thread, started at the first write. `run_group` runs a group of jobs in
    one transaction and settles every job: a result, ALONE, or an exception."""

    def __init__(self, run_group: Callable[[list[Job]], None], queue_wait_s: float,
                 max_group: int = MAX_GROUP):
        self._run_group = run_group
        self._queue_wait_s = queue_wait_s
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def queued(self) -> int:
        """How many writes wait for the writer (not counting the group it runs)."""
        return self._queue.qsize()

    def in_writer(self) -> bool:
        """True in the writer thread itself (a write from there cannot queue behind itself)."""
        return threading.current_thread() is self._thread

    def call(self, work: Callable[[Any], Any]) -> Any:
        """Queue `work` and return what it returned once its group committed (or ALONE), or
        raise what it raised. A write still queued after `queue_wait_s` is withdrawn with
        Unavailable, as the writer lock's wait was; one already running is waited for."""
        job = Job(work)
        self._start()
        self._queue.put(job)
        done, result = job.outcome(timeout=self._queue_wait_s)
        if done:
            return result
        if job.claim():
            raise Unavailable("the database is busy with other writes; retry shortly")
        return job.outcome()[1]

    def close(self) -> None:
        """Stop the writer after the writes queued so far (a later write starts it again)."""
        with self._starting:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            thread.join()

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="sarah-writer",
                                                daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            group = [self._queue.get()]
            while len(group) < self._max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in group:
                # Writes queued behind the stop are still served, by this last group.
                group.remove(_STOP)
                stopping = True
            # A caller that gave up waiting has withdrawn its job: it is not run.
            group = [job for job in group if job.claim()]
            if group:
                self._run(group)

    def _run(self, group: list[Job]) -> None:
        try:
            self._run_group(group)
        except BaseException as exc:  # the thread must outlive any failure: callers wait
            _LOGGER.exception("a group of writes failed unexpectedly")
            for job in group:
                if not job.done:
                    job.fail(exc)
