"""The health service follows the database: a cheap query every few seconds reports every
service NOT_SERVING while the database cannot answer, and SERVING once it can again, so a
load balancer's health check (Envoy's) sends the calls to replicas that can serve them.

While NOT_SERVING it asks every second, whatever the interval: a failover's new primary
takes calls as soon as it answers, not up to an interval later."""

import logging
import threading
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2

_LOGGER = logging.getLogger(__name__)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_RECHECK_SECONDS = 1.0  # the wait between two checks while NOT_SERVING (at most)


class DatabaseHealth:
    """Sets `names` ("" is the whole server) on `servicer` from `unreachable()`, which
    returns None when the database answers and why not otherwise; checked every `interval`
    seconds in a thread of its own. After the servicer's graceful shutdown, its NOT_SERVING
    stays whatever the database does (grpc_health ignores later settings)."""

    def __init__(self, servicer: health.HealthServicer, names: Sequence[str],
                 unreachable: Callable[[], str | None], interval: float):
        self._servicer = servicer
        self._names = tuple(names)
        self._unreachable = unreachable
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sarah-health", daemon=True)

    def start(self) -> None:
        """Report SERVING (the server has just reached the database) and start checking."""
        self._set(_SERVING)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _set(self, status: int) -> None:
        for name in self._names:
            self._servicer.set(name, status)

    def _run(self) -> None:
        serving = True
        while not self._stopped.wait(
                self._interval if serving else min(self._interval, _RECHECK_SECONDS)):
            why = self._unreachable()
            if (why is None) == serving:
                continue
            serving = why is None
            if serving:
                _LOGGER.info("database reachable again: health is SERVING")
            else:
                _LOGGER.warning("database unreachable (%s): health is NOT_SERVING", why)
            self._set(_SERVING if serving else _NOT_SERVING)
