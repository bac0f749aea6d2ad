"""Waiting for a condition that another process makes true, with a bound on the wait."""

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

Item = TypeVar("Item")


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


def still_holding(items: Iterable[Item], holds: Callable[[Item], object],
                  within: float) -> list[Item]:
    """The items `holds` is still true of after `within` seconds (sooner, once it is true
    of none): for asserting that ports close or processes end, naming those that did not."""
    left = list(items)

    def none_left() -> bool:
        left[:] = [item for item in left if holds(item)]
        return not left

    with contextlib.suppress(TimeoutError):
        wait_until(none_left, within, "the items to stop holding")
    return left
