"""The call log: a line for every call that fails, and for the calls that succeed (or are
refused for capacity) as many as a person reads; the rest of them counted, one line a
second per method.

A JSON line for every call is a cost every call pays under load: formatting it costs more
than the read it reports (the profiles: bench/README.md). A failed call is always
logged, with its request id, because that is the line someone goes looking for; a call
that succeeds is logged while its method has logged fewer than `ok_lines_per_second` in
the current second, and beyond that only counted. When the method's next second starts,
one `calls ... unlogged=N` line says how many went unlogged and their mean duration, so the
log still accounts for every call. Metrics (api/metrics.py) count every call regardless, and
Envoy's access log has a line for every HTTP request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Enough to follow a developer's or a test's calls one by one; at a thousand calls a
# second, a hundredth of the lines.
OK_LINES_PER_SECOND = 10
_WINDOW_S = 1.0
_LOGGER = logging.getLogger("server.calls")


@dataclass
class _Window:
    """One method's current second."""

    start: float
    logged: int = 0
    unlogged: int = 0
    unlogged_seconds: float = 0.0


class CallLog:
    """Writes the call log lines to `logger`; thread-safe."""

    def __init__(self, logger: logging.Logger = _LOGGER,
                 ok_lines_per_second: int = OK_LINES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._budget = ok_lines_per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}

    def record(self, method: str, code: str, seconds: float, request_id: str,
               routine: bool | None = None) -> None:
        """The end of one call: logged, or counted for the method's next summary line.
        A routine call (by default one that succeeded; also one refused because the
        server is at capacity, where a line per refusal would feed the overload) shares
        the budget of its method and code; any other call is always logged."""
        if code == "OK" if routine is None else routine:
            key, now = (method, code), self._clock()
            with self._lock:
                window = self._windows.get(key)
                if window is None or now - window.start >= _WINDOW_S:
                    self._windows[key] = _Window(now)
                    ended, window = window, self._windows[key]
                else:
                    ended = None
                counted = window.logged >= self._budget
                if counted:
                    window.unlogged += 1
                    window.unlogged_seconds += seconds
                else:
                    window.logged += 1
            if ended is not None:
                self._summary(key, ended)
            if counted:
                return
        fields = {"method": method, "code": code, "duration_ms": round(seconds * 1000, 2),
                  "request_id": request_id}
        self._logger.info("call method=%s code=%s duration_ms=%.2f request_id=%s",
                          method, code, seconds * 1000, request_id, extra=fields)

    def flush(self) -> None:
        """Log what the current seconds left unlogged (at shutdown)."""
        with self._lock:
            windows, self._windows = self._windows, {}
        for key, window in windows.items():
            self._summary(key, window)

    def _summary(self, key: tuple[str, str], window: _Window) -> None:
        if not window.unlogged:
            return
        (method, code), mean_ms = key, window.unlogged_seconds * 1000 / window.unlogged
        fields = {"method": method, "code": code, "unlogged": window.unlogged,
                  "mean_duration_ms": round(mean_ms, 2)}
        self._logger.info("calls method=%s code=%s unlogged=%d mean_duration_ms=%.2f "
                          "(beyond %d lines a second)", method, code,
                          window.unlogged, mean_ms, self._budget, extra=fields)
