"""CPU time of a process tree, read from /proc, and a meter of it over a measured phase."""

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.memory import process_tree

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds `pid` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by each of `pids` and every descendant (a server's workers)."""
    return sum(cpu_seconds(p) for pid in pids for p in process_tree(pid))


class CpuMeter:
    """The CPU the trees under `pids` use from `skip_s` after the block starts (a load's
    warm-up) to its end, in cores: CPU seconds over wall seconds of that window."""

    def __init__(self, pids: list[int], skip_s: float = 0.0):
        self.pids, self.skip_s = pids, skip_s
        self.cores: float | None = None
        self._start: tuple[float, float] | None = None
        self._done = threading.Event()

    @contextlib.contextmanager
    def metering(self) -> Iterator["CpuMeter"]:
        thread = threading.Thread(target=self._first_reading, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._done.set()
            thread.join()
            if self._start is not None:
                wall0, cpu0 = self._start
                wall = time.monotonic() - wall0
                if wall > 0:
                    self.cores = (tree_cpu_seconds(self.pids) - cpu0) / wall

    def _first_reading(self) -> None:
        if not self._done.wait(self.skip_s):
            self._start = (time.monotonic(), tree_cpu_seconds(self.pids))

    def per_call_ms(self, rps: float) -> float | None:
        """Milliseconds of CPU per call at `rps` calls a second (the load's rate)."""
        return None if self.cores is None or rps <= 0 else self.cores / rps * 1000
