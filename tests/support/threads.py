"""Load from threads in the test process, for as long as a `with` block lasts."""

import itertools
import threading
from collections.abc import Callable
from typing import Self

from client import SarahClient


class BackgroundThreads:
    """`count` threads each running `run(index)` from the block's start; at its end
    `stopping` is set and every thread must have returned within `join_timeout` seconds."""

    def __init__(self, count: int, join_timeout: float):
        self.stopping = threading.Event()
        self._join_timeout = join_timeout
        self._threads = [threading.Thread(target=self.run, args=(i,)) for i in range(count)]

    def run(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=self._join_timeout)
        assert not any(thread.is_alive() for thread in self._threads), "a thread never ended"


class CountedWrites(BackgroundThreads):
    """`count` threads, thread i calling `write(client, i, round)` in a loop on a SarahClient
    of `targets[i % len(targets)]` until the block ends; `acked` counts the calls that
    returned, `errors` keeps every one that raised (the finding of a no-failure test)."""

    def __init__(self, targets: list[str], count: int,
                 write: Callable[[SarahClient, int, int], object]):
        self.acked = 0
        self.errors: list[Exception] = []
        self._targets, self._write = targets, write
        self._lock = threading.Lock()
        super().__init__(count, join_timeout=60)

    def run(self, index: int) -> None:
        with SarahClient(self._targets[index % len(self._targets)], timeout=20) as sarah:
            for round_ in itertools.count():
                if self.stopping.is_set():
                    return
                try:
                    self._write(sarah, index, round_)
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    with self._lock:
                        self.errors.append(exc)
                    continue
                with self._lock:
                    self.acked += 1
