"""Resident memory of a process tree, read from /proc, and a sampler that keeps its peak."""

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant of it."""
    kids, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(kids.get(current, ()))
    return found


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """VmRSS of `pid` and of every descendant (a server's worker processes too), in bytes."""
    return sum(_rss(p) for p in process_tree(pid))


class PeakMemory:
    """Samples the RSS of the tree under `pid` in the background; `peak` is the highest."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    @contextlib.contextmanager
    def sampling(self) -> Iterator["PeakMemory"]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        while True:
            self.samples.append((time.monotonic() - start, tree_rss(self.pid)))
            if self._stop.wait(self.every_s):
                return
