"""Signals noted by handlers that take no lock.

A handler that calls threading.Event.set() can deadlock the process: Python runs a second
signal's handler inside the first, and the second set() waits forever for the lock the
first set() holds. Seen with SIGTERM from PR_SET_PDEATHSIG (the supervisor was killed)
arriving twice: the server hung with its port held. A handler here only assigns a name.
"""

import signal
import time
from collections.abc import Callable

_POLL_S = 0.2


class Signals:
    """Counts each of `watched` as it arrives; the main thread reads and polls."""

    def __init__(self, *watched: signal.Signals):
        self._seen: dict[int, int] = {int(s): 0 for s in watched}
        for sig in watched:
            signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self._seen[signum] += 1  # one assignment, no lock

    def count(self, sig: signal.Signals) -> int:
        """How many times `sig` has arrived so far."""
        return self._seen[int(sig)]

    def wait_for(self, done: Callable[[], bool], poll: float = _POLL_S) -> None:
        """Return once `done()` is true, checking every `poll` seconds."""
        while not done():
            time.sleep(poll)
