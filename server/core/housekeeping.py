"""Housekeeping: a background thread that, every `interval` seconds, erases the leads
inactive for SARAH_PURGE_INACTIVE_DAYS (when set), removes the change log's events older
than SARAH_HISTORY_DAYS and forgets expired request ids.

All of it goes a small batch at a time, each batch its own short write transaction
(the service's units of work), so a writer never waits long behind it, however large the
backlog; and after each batch it rests as long as the batch took, so it holds SQLite's
one write lock (and this process's GIL) at most half the time while writers queue.

Every replica and every `--workers` process runs its own: the units of work are safe side
by side (a lead two replicas purge is erased by one, found gone by the other;
two replicas pruning take different rows: storage/retention.py says how).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from server.core.errors import Unavailable

if TYPE_CHECKING:
    from server.core.service import SarahService

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_INTERVAL_SECONDS = 60.0
# Rows per write transaction: a few milliseconds of the write lock on either database.
DEFAULT_BATCH = 500


@dataclass(frozen=True)
class Swept:
    """What one pass removed."""

    leads: int = 0
    events: int = 0
    requests: int = 0


class Housekeeping:
    """Runs `sweep` at start and then every `interval` seconds until stopped."""

    def __init__(self, service: SarahService, interval: float = DEFAULT_INTERVAL_SECONDS,
                 batch: int = DEFAULT_BATCH):
        self._service = service
        self._interval = interval
        self._batch = batch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sarah-housekeeping",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread, between two batches at the latest (each is short), before the
        database closes."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        postponed = 0  # passes in a row the database could not take
        while not self._stopping.is_set():
            try:
                swept = self.sweep()
            except Unavailable as exc:  # the database is down or busy: next time
                _LOGGER.warning("housekeeping postponed: %s", exc)
                postponed += 1
            except Exception:  # never let one bad pass end housekeeping for good
                _LOGGER.exception("housekeeping pass failed")
            else:
                if postponed:
                    _LOGGER.info("housekeeping resumed after %d postponed passes", postponed)
                    postponed = 0
                if swept != Swept():
                    _LOGGER.info("housekeeping erased %d inactive leads, removed %d events "
                                 "past the history and %d expired request ids",
                                 swept.leads, swept.events, swept.requests)
            self._stopping.wait(self._interval)

    def sweep(self) -> Swept:
        """One pass, until nothing is left to remove or the thread is stopping. The purge
        goes first: the deleted events it logs are then kept for the whole history."""
        leads = self._purge()
        through = self._service.history_end()
        events = 0 if through is None else self._drain(
            lambda: self._service.prune_history(through, self._batch))
        requests = self._drain(lambda: self._service.prune_requests(self._batch))
        return Swept(leads=leads, events=events, requests=requests)

    def _paced(self, work: Callable[[], _T]) -> _T:
        """Run `work`, then rest as long as it took (less if stopping)."""
        started = time.monotonic()
        done = work()
        self._stopping.wait(time.monotonic() - started)
        return done

    def _drain(self, batch: Callable[[], int]) -> int:
        """Run `batch` until one removes less than a full batch; the total removed."""
        total = 0
        while not self._stopping.is_set():
            gone = self._paced(batch)
            total += gone
            if gone < self._batch:
                break
        return total

    def _purge(self) -> int:
        erased = 0
        while not self._stopping.is_set():
            keys = self._service.inactive_leads(self._batch)
            here = 0
            for key in keys:
                if self._stopping.is_set():
                    break
                here += self._paced(functools.partial(self._service.purge, key))
            erased += here
            # A short list is the last one; a list this replica erased none of, another
            # replica is working through (it goes on, and so does the next pass).
            if len(keys) < self._batch or here == 0:
                break
        return erased
