"""Waiting for a condition that another process makes true, with a bound on the wait."""

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, what: str, *,
               interval: float = 0.1,
               ignoring: tuple[type[BaseException], ...] = ()) -> None:
    """Call `predicate` until it returns something true; fail naming `what` after `timeout`
    seconds. An exception in `ignoring` (say OSError, while a port is not yet open) counts
    as not yet; any other ends the wait at once, as a process found dead should."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except ignoring:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)
