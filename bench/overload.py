"""Overload through Envoy: goodput and refusal latency at a multiple of the peak rate.

    python -m bench.overload [--rpcs UpsertState,GetState] [--factor 4] [--connections 64]

The real server (with --server-args, default flags otherwise) behind envoy.yaml, as the
main table runs them. For each RPC over HTTP/JSON: the peak at 16 connections, then
h2load at `--factor` times that rate (`--rps` per connection over `--connections`
HTTP/1.1 connections; each connection has one request in flight, so a connection whose
answer is late sends less). Printed per HTTP status: rate, p50, p99, max; goodput (2xx a
second) over the peak; and the 503s' latency, which is how fast the excess is refused.
"""

import argparse
import collections
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import h2load, workload
from bench.procs import envoy_in_front, real_server
from bench.seed import phone, seed

_PEAK_CONNECTIONS = 16


def _percentile(values: list[float], fraction: float) -> float:
    return values[max(0, min(len(values) - 1, round(fraction * len(values)) - 1))]


def overload(rpc: str, port: int, args: argparse.Namespace, workdir: Path) -> list[str]:
    call = workload.calls(phone(0), phone(args.leads + 1))[rpc]
    shape = {"duration": args.duration, "warmup": 1.0}
    peak = h2load.run(workload.http_load(call, port, workdir, f"{rpc}-peak",
                                         concurrency=_PEAK_CONNECTIONS, **shape),
                      workdir / f"{rpc}-peak.tsv")
    offered = args.factor * peak.rps
    flood = workload.http_load(call, port, workdir, f"{rpc}-flood",
                               concurrency=args.connections, **shape)
    log = workdir / f"{rpc}-flood.tsv"
    argv = h2load.command(flood, log)
    argv.insert(-1, f"--rps={offered / args.connections:.2f}")
    subprocess.run(argv, check=True, capture_output=True, text=True,
                   timeout=args.duration + 120)
    by_status: dict[str, list[float]] = collections.defaultdict(list)
    for line in log.read_text().splitlines():
        _start, status, micros = line.split("\t")
        by_status[status].append(int(micros) / 1000)
    lines = [f"{rpc}: peak {peak.rps:.0f} req/s at {_PEAK_CONNECTIONS} connections "
             f"(p50 {peak.p50_ms} ms); offered {offered:.0f} req/s ({args.factor:g}x) over "
             f"{args.connections} connections"]
    for status, millis in sorted(by_status.items()):
        millis.sort()
        lines.append(f"  status {status}: {len(millis) / args.duration:.0f}/s, p50 "
                     f"{_percentile(millis, 0.5):.1f} ms, p99 {_percentile(millis, 0.99):.1f} "
                     f"ms, max {millis[-1]:.1f} ms")
    good = sum(len(m) for s, m in by_status.items() if s.startswith("2")) / args.duration
    lines.append(f"  goodput {good:.0f} req/s = {good / max(peak.rps, 1):.2f} of the peak "
                 "(target >= 0.90)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rpcs", default="UpsertState,GetState")
    parser.add_argument("--factor", type=float, default=4.0, help="times the peak rate")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per run")
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--envoy-concurrency", type=int, default=2)
    parser.add_argument("--server-args", default="")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sarah-overload-"))
    server_args = shlex.split(args.server_args)
    try:
        db = workdir / "overload.db"
        seed(db, args.leads, workdir, server_args)
        server = real_server(db, workdir, server_args, name="server-overload")
        try:
            envoy = envoy_in_front(server, "envoy-overload", workdir, args.envoy_concurrency)
            try:
                for rpc in args.rpcs.split(","):
                    print("\n".join(overload(rpc.strip(), envoy.port, args, workdir)),
                          flush=True)
            finally:
                envoy.stop()
        finally:
            server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
