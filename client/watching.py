"""What SarahClient.watch and its asyncio twin share: where to resume, when to retry, how long
to wait. The transport (blocking or asyncio) stays in sync.py and aio.py."""

import logging
import random
import time
from dataclasses import dataclass, field

import grpc

from client.options import RetryPolicy
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

# Seconds of failed reconnections in a row before a watch gives up: longer than a restart.
DEFAULT_GIVE_UP_AFTER = 60.0

# A stream that ends with these is resumed from the last revision seen: the server went
# away (UNAVAILABLE: restart, dropped connection, Envoy gone), or it dropped a watcher that
# fell behind (RESOURCE_EXHAUSTED, see WatchPosition.retryable).
_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class RevisionTooOld(Exception):
    """The server no longer holds every event after `revision` (OUT_OF_RANGE): list the
    leads again and watch from the revision that list returns."""

    def __init__(self, revision: int, details: str) -> None:
        super().__init__(
            f"OUT_OF_RANGE: the events after revision {revision} are no longer retained "
            f"({details}); list the leads again (ListLeads or GetStats) and watch from the "
            f"revision that returns")
        self.revision = revision


class WatchGaveUp(Exception):
    """The server stayed unreachable for longer than the watch may wait."""


@dataclass
class WatchPosition:
    """The last revision a watch has seen, and the request that resumes right after it.

    Revisions are strictly increasing, so an event at or below the last one is a repeat that
    a resumed stream sent again; skipping it means nothing is delivered twice."""

    workspace_id: str | None
    revision: int | None
    received: bool = field(default=False, init=False)

    def request(self) -> pb.WatchLeadsRequest:
        """WatchLeads from just after the last revision seen (from now on, if none yet)."""
        request = pb.WatchLeadsRequest()
        if self.workspace_id is not None:
            request.workspace_id = self.workspace_id
        if self.revision is not None:
            request.since_revision = self.revision
        return request

    def stats_request(self) -> pb.GetStatsRequest:
        """GetStats over the watched leads: its revision pins "from now on" to a number."""
        request = pb.GetStatsRequest()
        if self.workspace_id is not None:
            request.workspace_id = self.workspace_id
        return request

    def start_attempt(self) -> None:
        self.received = False

    def accept(self, event: pb.LeadEvent) -> bool:
        """Whether `event` is new; moves the position past it. A heartbeat's revision is
        the current one, so resuming from it is as exact as from a change."""
        self.received = True
        if self.revision is not None and event.revision <= self.revision:
            return False
        self.revision = event.revision
        return True

    def retryable(self, err: grpc.RpcError) -> bool:
        """Whether the stream that failed with `err` should be resumed; raises RevisionTooOld
        for OUT_OF_RANGE. RESOURCE_EXHAUSTED is retried only after the stream delivered
        something (a watcher dropped for falling behind); refused at once, it is a limit
        (too many watchers) the caller should hear of."""
        code = err.code() if isinstance(err, grpc.Call | grpc.aio.AioRpcError) else None
        details = err.details() if isinstance(err, grpc.Call | grpc.aio.AioRpcError) else ""
        if code == grpc.StatusCode.OUT_OF_RANGE:
            raise RevisionTooOld(self.revision or 0, details or "") from err
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return self.received
        return code in _RESUMABLE


class Backoff:
    """Waits between reconnections: random up to initial_backoff, growing by the multiplier
    to max_backoff (the client's RetryPolicy), back to the start once a stream delivers.
    After `give_up_after` seconds of failed attempts in a row, WatchGaveUp."""

    def __init__(self, policy: RetryPolicy, give_up_after: float | None) -> None:
        self._policy = policy
        self._give_up_after = give_up_after
        self._ceiling = policy.initial_backoff
        self._failing_since: float | None = None

    def reset(self) -> None:
        self._ceiling = self._policy.initial_backoff
        self._failing_since = None

    def next_delay(self, err: BaseException | None) -> float:
        """Seconds to wait before the next attempt; raises WatchGaveUp when out of time."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        failing_for = now - self._failing_since
        if self._give_up_after is not None and failing_for >= self._give_up_after:
            raise WatchGaveUp(
                f"the server was unreachable for {failing_for:.1f} s; last error: "
                f"{err}") from err
        delay = random.uniform(0, self._ceiling)
        self._ceiling = min(self._ceiling * self._policy.backoff_multiplier,
                            self._policy.max_backoff)
        _LOGGER.info("watch stream ended (%s); resuming in %.2f s", err, delay)
        return delay
