"""The load generator: h2load (nghttp2), run once per measurement, its output parsed."""

import logging
import math
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from harness.apt import apt_install

_LOGGER = logging.getLogger(__name__)

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def ensure_h2load() -> str:
    """Return h2load's path, installing Debian's nghttp2-client first if it is missing."""
    found = shutil.which("h2load")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("h2load is missing: install nghttp2-client "
                           "(apt-get install -y nghttp2-client) and run again")
    _LOGGER.warning("h2load is missing; installing nghttp2-client with apt-get")
    apt_install("nghttp2-client")
    found = shutil.which("h2load")
    if not found:
        raise RuntimeError("nghttp2-client installed, yet no h2load on PATH")
    return found


def grpc_frame(message: bytes) -> bytes:
    """A unary gRPC request body: the uncompressed-flag byte, the length, the message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


@dataclass(frozen=True)
class Load:
    """One h2load run: where, what, how many requests in flight, how long."""

    url: str
    body: Path | None = None
    headers: tuple[str, ...] = ()
    h1: bool = False
    concurrency: int = 16
    h2_connections: int = 4
    duration: float = 10.0
    warmup: float = 1.0
    log_latencies: bool = True
    rps: float | None = None  # requests per second per connection (h2load --rps); None: flat out


@dataclass(frozen=True)
class Result:
    """What one run measured; latencies in milliseconds, None without a per-request log."""

    rps: float
    done: int
    failed: int
    non_2xx: int
    p50_ms: float | None
    p99_ms: float | None
    # From the per-request log: answers with a 2xx status, per second of the measured
    # phase (goodput), and the latencies of the others (refusals: 503s and the like).
    ok_rps: float | None = None
    refused_p50_ms: float | None = None
    refused_p99_ms: float | None = None


def _split(load: Load) -> tuple[int, int]:
    """(connections, streams per connection) that keep `concurrency` requests in flight.

    HTTP/1.1 has one request per connection (h2load pipelines nothing with a body);
    HTTP/2 multiplexes, as a gRPC channel or Envoy's upstream pool does.
    """
    if load.h1:
        return load.concurrency, 1
    connections = max(1, min(load.h2_connections, load.concurrency))
    return connections, math.ceil(load.concurrency / connections)


def command(load: Load, log_file: Path | None) -> list[str]:
    connections, streams = _split(load)
    argv = [ensure_h2load(), "-t", "1", "-c", str(connections), "-m", str(streams),
            "-D", f"{max(1, round(load.duration * 1000))}ms"]
    if load.warmup > 0:
        argv.append(f"--warm-up-time={round(load.warmup * 1000)}ms")
    if load.h1:
        argv.append("--h1")
    if load.rps is not None:
        argv.append(f"--rps={load.rps:g}")
    if load.body is not None:
        argv += ["-d", str(load.body)]
    if log_file is not None:
        argv.append(f"--log-file={log_file}")
    for header in load.headers:
        argv += ["-H", header]
    return [*argv, load.url]


def _percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of microseconds, in milliseconds."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1] / 1000


def run(load: Load, log_file: Path) -> Result:
    """Run h2load to completion and return its figures."""
    return run_many([load], [log_file])


def split(load: Load, urls: list[str]) -> list[Load]:
    """`load` spread over several servers (worker processes on their own ports): the
    requests in flight and the HTTP/2 connections shared out as evenly as they go."""
    n = len(urls)
    return [replace(load, url=url,
                     concurrency=load.concurrency // n + (i < load.concurrency % n),
                     h2_connections=max(1, load.h2_connections // n))
            for i, url in enumerate(urls)
            if load.concurrency // n + (i < load.concurrency % n) > 0]


def run_many(loads: list[Load], log_files: list[Path]) -> Result:
    """Run one h2load per load at once and return their figures summed.

    h2load prints min/max/mean/sd only, so p50 and p99 come from its --log-file: one line
    per request of the measured phase (start µs, status, µs to the end of the response).
    """
    procs = []
    for load, log_file in zip(loads, log_files, strict=True):
        use_log = log_file if load.log_latencies else None
        procs.append(subprocess.Popen(command(load, use_log), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    rps = 0.0
    n_done = failed = non_2xx = 0
    micros: list[int] = []
    refused: list[int] = []
    n_ok = 0
    for proc, load, log_file in zip(procs, loads, log_files, strict=True):
        out, err = proc.communicate(timeout=load.duration + load.warmup + 60)
        if proc.returncode != 0 or "finished in" not in out:
            raise RuntimeError(f"h2load failed ({proc.returncode}): {out[-2000:]}{err}")
        rps += float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out).group(1))
        counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, "
                           r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        n_done += int(counts.group(1))
        failed += sum(int(g) for g in counts.groups()[1:])
        non_2xx += sum(int(g) for g in statuses.groups()[1:])
        if load.log_latencies:
            for line in log_file.read_text().splitlines():
                cols = line.split("\t")
                if len(cols) < 3 or cols[1] == "-1":
                    continue
                micros.append(int(cols[2]))
                if cols[1].startswith("2"):
                    n_ok += 1
                else:
                    refused.append(int(cols[2]))
    logged = all(load.log_latencies for load in loads)
    return summarize(rps, n_done, failed, non_2xx, micros, refused,
                     n_ok / loads[0].duration if logged else None)


def summarize(rps: float, done: int, failed: int, non_2xx: int, micros: list[int],
              refused: list[int], ok_rps: float | None) -> Result:
    """A Result from the counts and the microseconds of each request (any order)."""
    micros, refused = sorted(micros), sorted(refused)

    def pct(values: list[int], fraction: float) -> float | None:
        return _percentile(values, fraction) if values else None

    return Result(rps=rps, done=done, failed=failed, non_2xx=non_2xx, p50_ms=pct(micros, 0.5),
                  p99_ms=pct(micros, 0.99), ok_rps=ok_rps, refused_p50_ms=pct(refused, 0.5),
                  refused_p99_ms=pct(refused, 0.99))
