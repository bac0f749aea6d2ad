"""Delivering the change log to watchers (WatchLeads), within one process.

One tailer thread per process reads the log after the last revision it delivered and fans
each event out to the watchers' queues. It wakes when a write of this process commits
(Repository.on_commit), when PostgreSQL notifies a commit of another replica
(storage/notify.py), and at the latest every `poll_seconds` (other SQLite worker
processes, or a lost notification): no watcher polls anything.

A watcher first catches up from the log itself (since_revision), then joins the fan-out
at exactly the revision it reached, under the hub's lock, so it gets every event after
its start once and in order (the log has revisions in commit order: changelog.py).

Commits close together share one read of the log and one wake per watcher: the tailer
reads at most once every `coalesce_seconds` (a write every 10 ms or slower is read at
once). Each fan-out touches only the watchers of the workspaces in it (and those of every
workspace): 200 watchers of another workspace cost a write nothing but the tailer's read.

Each watcher's queue is bounded: the tailer never waits for a watcher; one that falls
`buffer` events behind is dropped with ResourceExhausted and resumes from its last
revision. Heartbeats are sent by the watcher's own thread after `heartbeat_seconds` of
silence.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from server.core.changes import DELETED, HEARTBEAT, Event
from server.core.errors import InvalidArgument, OutOfRange, ResourceExhausted, Unavailable

_LOGGER = logging.getLogger(__name__)
_BATCH = 500


class LogReader(Protocol):
    """What delivery reads of the change log (of the store)."""

    def log_head(self) -> tuple[int, int]: ...
    def events_after(self, revision: int, limit: int) -> list[Event]: ...


@dataclass(frozen=True)
class WatchLimits:
    max_watchers: int = 256
    buffer: int = 1000  # events a watcher may fall behind before it is dropped
    heartbeat_seconds: float = 15.0
    poll_seconds: float = 0.25
    # The least time between two reads of the log: under a burst of commits, one read and
    # one wake per watcher covers several (at most this much added to a watcher's latency).
    coalesce_seconds: float = 0.005


@dataclass(eq=False)
class _Watcher:
    workspace: str | None  # None: every workspace
    joined_at: int  # the tailer hands it only events after this revision
    queue: collections.deque[Event] = field(default_factory=collections.deque)
    cond: threading.Condition = field(default_factory=threading.Condition)
    overflowed: bool = False
    closed: bool = False

    def offer(self, events: list[Event], limit: int) -> bool:
        """Queue `events` (of this watcher's workspace, in order) past the revision it
        joined at; False once it has overflowed."""
        seen = events if events[0].revision > self.joined_at else [
            e for e in events if e.revision > self.joined_at]
        if not seen:
            # Waking a watcher with nothing for it costs the writers a thread switch each
            # (200 watchers of another workspace took 2/3 of the write rate).
            return True
        with self.cond:
            self.queue.extend(seen)
            if len(self.queue) > limit:
                self.overflowed = True
                self.queue.clear()
            self.cond.notify()
            return not self.overflowed

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


class Hub:
    """The watchers of one process and the tailer that feeds them."""

    def __init__(self, store: LogReader, limits: WatchLimits = WatchLimits(),
                 clock: Callable[[], int] = lambda: time.time_ns() // 1000):
        self._store = store
        self._limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        # By workspace (None: the watchers of every workspace).
        self._watchers: dict[str | None, set[_Watcher]] = collections.defaultdict(set)
        self._open = 0  # streams holding a slot (catching up or joined)
        self._delivered = -1  # -1: the tailer has not started
        self._wake = threading.Event()
        self._stopped = False
        self._tailer: threading.Thread | None = None

    def poke(self, *_events: object) -> None:
        """A commit happened somewhere: let the tailer read the log."""
        self._wake.set()

    def stop(self) -> None:
        """End every watch (UNAVAILABLE: the caller resumes elsewhere) and the tailer."""
        with self._lock:
            self._stopped = True
            watchers = [w for group in self._watchers.values() for w in group]
        for watcher in watchers:
            watcher.close()
        self._wake.set()
        if self._tailer is not None:
            self._tailer.join(timeout=5)

    def watch(self, workspace: str | None, since: int | None) -> Subscription:
        """A stream of the events after `since` (None: from now on) that `workspace` (None:
        every one) sees. The workspace is already scoped to the caller."""
        if since is not None and since < 0:
            raise InvalidArgument([("since_revision", f"must be 0 or more, got {since}")])
        with self._lock:
            if self._stopped:
                raise Unavailable("the server is shutting down; watch again")
            if self._open >= self._limits.max_watchers:
                raise ResourceExhausted(
                    f"too many watchers on this server (at most {self._limits.max_watchers}); "
                    "retry later")
            self._open += 1
        try:
            self._start_tailer()
            head, pruned = self._store.log_head()
            if since is not None and since < pruned:
                raise OutOfRange(
                    f"since_revision {since} is older than the retained log (events up to "
                    f"{pruned} were removed): list again and watch from its revision")
            if since is not None and since > head:
                raise InvalidArgument([("since_revision", f"{since} is ahead of the latest "
                                                          f"revision {head}")])
        except BaseException:
            self._release()
            raise
        return Subscription(self, workspace, head if since is None else since)

    def watching(self) -> int:
        """The streams open on this server (catching up or joined)."""
        return self._open

    def _release(self) -> None:
        with self._lock:
            self._open -= 1

    def _start_tailer(self) -> None:
        with self._lock:
            if self._tailer is not None:
                return
            self._delivered = self._store.log_head()[0]
            self._tailer = threading.Thread(target=self._tail, name="sarah-tailer",
                                            daemon=True)
            self._tailer.start()

    def _join(self, workspace: str | None, cursor: int) -> _Watcher | None:
        """Join the fan-out at `cursor` if the tailer has delivered no further; else None
        (read the log up to where the tailer is first)."""
        with self._lock:
            if self._stopped:
                raise Unavailable("the server is shutting down; watch again")
            if cursor < self._delivered:
                return None
            if not self._watchers:
                # The tailer skips the log while no one is joined: it resumes from here
                # (this watcher has read up to `cursor`), at once.
                self._delivered = max(self._delivered, cursor)
                self._wake.set()
            watcher = _Watcher(workspace, cursor)
            self._watchers[workspace].add(watcher)
            return watcher

    def _leave(self, watcher: _Watcher) -> None:
        with self._lock:
            group = self._watchers.get(watcher.workspace)
            if group is not None:
                group.discard(watcher)
                if not group:
                    del self._watchers[watcher.workspace]

    def delivered(self) -> int:
        return self._delivered

    def _drop_erased(self) -> None:
        """Erasure wins over delivery (contract v1.2): an erasure removed the lead's earlier
        events from the log in the transaction of its `deleted` event, so the events still
        waiting in a watcher's queue that the log no longer holds are an erased lead's
        personal data; they are dropped, never sent. Queues are almost always empty (a
        watcher takes its events as they come), so this costs a read only when one lags."""
        with self._lock:
            watchers = [w for group in self._watchers.values() for w in group]
        queued: set[int] = set()
        for watcher in watchers:
            with watcher.cond:
                queued.update(event.revision for event in watcher.queue)
        if not queued:
            return
        low, high = min(queued), max(queued)
        kept = {event.revision for event in self._store.events_after(low - 1, high - low + 1)}
        erased = queued - kept
        if not erased:
            return
        for watcher in watchers:
            with watcher.cond:
                watcher.queue = collections.deque(
                    event for event in watcher.queue if event.revision not in erased)

    def _tail(self) -> None:
        read_at = 0.0
        failing = False  # the log could not be read: logged once, and once it can again
        while True:
            self._wake.wait(self._limits.poll_seconds)
            if self._stopped:
                return
            # The commits that land while this waits are read with the one that woke it.
            pause = read_at + self._limits.coalesce_seconds - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            # Cleared before the read: a commit after this point sets it again.
            self._wake.clear()
            if not self._watchers:
                continue  # nobody to hand events to: a write costs no read of the log
            read_at = time.monotonic()
            try:
                self._fan_out()
            except Unavailable as exc:  # the database is down or failing over
                if not failing:
                    _LOGGER.warning("reading the change log failed (%s); retrying every "
                                    "%g s", exc, self._limits.poll_seconds)
                failing = True
                time.sleep(self._limits.poll_seconds)
            except Exception:  # noqa: BLE001 - never let one bad read end delivery
                _LOGGER.exception("reading the change log failed; retrying")
                time.sleep(self._limits.poll_seconds)
            else:
                if failing:
                    _LOGGER.info("reading the change log again from revision %d",
                                 self._delivered)
                    failing = False

    def _fan_out(self) -> None:
        while True:
            batch = self._store.events_after(self._delivered, _BATCH)
            if not batch:
                return
            if any(event.kind == DELETED for event in batch):
                self._drop_erased()
            # The events each group of watchers sees, in order (None: every workspace's).
            by_workspace: dict[str | None, list[Event]] = {None: []}
            for event in batch:
                if event.lead is not None:
                    by_workspace[None].append(event)
                    by_workspace.setdefault(event.lead.workspace_id, []).append(event)
            with self._lock:
                for workspace, events in by_workspace.items():
                    group = self._watchers.get(workspace)
                    if not group or not events:
                        continue
                    for watcher in list(group):
                        if not watcher.offer(events, self._limits.buffer):
                            group.discard(watcher)
                    if not group:
                        del self._watchers[workspace]
                # Not below where a watcher that joined alone during the read set it.
                self._delivered = max(self._delivered, batch[-1].revision)
            if len(batch) < _BATCH:
                return


class Subscription:
    """One watcher's stream: iterate it for events; close() ends it from another thread."""

    def __init__(self, hub: Hub, workspace: str | None, cursor: int):
        self._hub = hub
        self._workspace = workspace
        self._cursor = cursor  # the last revision this stream has passed
        self._watcher: _Watcher | None = None
        self._closed = threading.Event()
        self._released = False
        self._release_lock = threading.Lock()

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.close()
        self._release()

    def _release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        if self._watcher is not None:
            self._hub._leave(self._watcher)
        self._hub._release()

    def __iter__(self) -> Iterator[Event]:
        try:
            yield from self._catch_up()
            yield from self._live()
        finally:
            self._release()

    def _catch_up(self) -> Iterator[Event]:
        hub = self._hub
        while not self._closed.is_set():
            watcher = hub._join(self._workspace, self._cursor)
            if watcher is not None:
                self._watcher = watcher
                return
            batch = hub._store.events_after(self._cursor, _BATCH)
            if not batch:  # erased events: nothing left below the tailer's revision
                self._cursor = max(self._cursor, hub.delivered())
                continue
            for event in batch:
                if event.lead is not None and self._workspace in (None, event.lead.workspace_id):
                    yield event
            self._cursor = batch[-1].revision

    def _live(self) -> Iterator[Event]:
        watcher = self._watcher
        if watcher is None:
            return
        limits = self._hub._limits
        quiet_since = time.monotonic()
        while True:
            with watcher.cond:
                while not (watcher.queue or watcher.overflowed or watcher.closed):
                    left = limits.heartbeat_seconds - (time.monotonic() - quiet_since)
                    if left <= 0:
                        break
                    watcher.cond.wait(left)
                if watcher.overflowed:
                    raise ResourceExhausted(
                        f"this watcher fell {limits.buffer} events behind and was dropped: "
                        f"watch again with since_revision={self._cursor}")
                if watcher.closed:
                    if self._closed.is_set():
                        return
                    raise Unavailable("the server is shutting down; watch again with "
                                      f"since_revision={self._cursor}")
                events = list(watcher.queue)
                watcher.queue.clear()
                if not events:
                    # Read under the watcher's lock with its queue empty: the tailer has
                    # handed this watcher everything up to the revision it delivered.
                    self._cursor = max(self._cursor, self._hub.delivered())
            if events:
                for event in events:
                    yield event
                    self._cursor = event.revision
            else:
                yield Event(self._cursor, HEARTBEAT, None, (), self._hub._clock())
            quiet_since = time.monotonic()
