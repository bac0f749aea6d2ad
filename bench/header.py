"""The lines above the bench's tables: the machine, the server's commit and arguments, and
the load's shape."""

import os
import platform
import subprocess
from pathlib import Path

from bench.run import Options
from deploy import ROOT


def _git() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()
    changed = git("status", "--porcelain", "--", "server", "envoy.yaml")
    dirty = " (uncommitted changes in server/ or envoy.yaml)" if changed else ""
    other = os.environ.get("SARAH_BENCH_SERVER_PATH")
    elsewhere = f", server/ from {other} (SARAH_BENCH_SERVER_PATH)" if other else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty + elsewhere


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs ({model}), {mem_kib / 2**20:.1f} GiB RAM, {platform.platform()}"


def header(opts: Options, h2load_version: str) -> list[str]:
    return [
        f"machine: {machine()}",
        f"server: commit {_git()}, args {' '.join(opts.server_args) or '(defaults)'}, "
        f"{opts.processes} process(es); ceilings: as many bare processes, grpcio on "
        f"{opts.bare_threads} threads and grpc.aio; peers: FastAPI + uvicorn, one process, "
        f"def and async def endpoints (the faster counts); "
        f"Envoy --concurrency {opts.envoy_concurrency}",
        f"load: {h2load_version}, {opts.concurrency} requests in flight (gRPC: "
        f"{min(opts.h2_connections, opts.concurrency)} HTTP/2 connections; HTTP/JSON: "
        f"HTTP/1.1, one per connection), {opts.duration:g} s each after {opts.warmup:g} s "
        f"warm-up; HTTP door against the peer: median of {opts.rounds} alternating rounds; "
        f"main table on {min(opts.leads)} leads",
    ]
