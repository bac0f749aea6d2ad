"""Load from threads in the test process, for as long as a `with` block lasts."""

import threading
from typing import Self


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
