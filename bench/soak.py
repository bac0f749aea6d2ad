"""Memory under a long load: Kapso's read-then-write pair against one server, RSS each second."""

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from bench import h2load, workload
from bench.memory import PeakMemory
from bench.procs import real_server
from bench.seed import phone

_LOGGER = logging.getLogger(__name__)

GROWTH_TARGET = 0.05  # RSS may wander this much above its warmed-up level


@dataclass(frozen=True)
class Soak:
    seconds: float
    warmup_seconds: float
    rps: dict[str, float]
    warm_rss: int  # the highest RSS until warm-up ended
    late_rss: int  # the highest RSS over the last tenth of the run
    peak_rss: int
    slope_mib_per_min: float  # least-squares fit over the samples after warm-up

    @property
    def growth(self) -> float:
        return (self.late_rss - self.warm_rss) / self.warm_rss if self.warm_rss else 0.0


def _slope(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if not spread:
        return 0.0
    per_s = sum((t - mean_t) * (r - mean_r) for t, r in samples) / spread
    return per_s * 60 / 2**20


def run_soak(db: Path, count: int, seconds: float, concurrency: int, workdir: Path,
             server_args: list[str]) -> Soak:
    """GetState and UpsertState at once, half the concurrency each, for `seconds`."""
    calls = workload.calls(phone(1), phone(count + 1))
    server = real_server(db, workdir, server_args, name="server-soak")
    rps: dict[str, float] = {}
    errors: list[BaseException] = []

    def drive(rpc: str) -> None:
        loads = workload.grpc_loads(calls[rpc], server.ports, workdir, f"soak-{rpc}",
                                    concurrency=max(1, concurrency // 2), duration=seconds,
                                    warmup=0, log_latencies=False)
        try:
            rps[rpc] = h2load.run_many(loads, [workdir / "unused.tsv"] * len(loads)).rps
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    memory = PeakMemory(server.proc.pid, every_s=1.0)
    try:
        with memory.sampling():
            drivers = [threading.Thread(target=drive, args=(rpc,))
                       for rpc in ("GetState", "UpsertState")]
            for driver in drivers:
                driver.start()
            for driver in drivers:
                driver.join()
    finally:
        server.stop()
    if errors:
        raise errors[0]
    warmup = min(60.0, seconds * 0.2)
    samples = memory.samples
    after = [(t, r) for t, r in samples if t >= warmup]
    late = [r for t, r in samples if t >= seconds * 0.9] or [samples[-1][1]]
    soak = Soak(
        seconds=seconds, warmup_seconds=warmup, rps=rps,
        warm_rss=max((r for t, r in samples if t < warmup), default=samples[0][1]),
        late_rss=max(late), peak_rss=memory.peak, slope_mib_per_min=_slope(after),
    )
    _LOGGER.info("soak: %s", soak)
    return soak
