"""`python -m bench` (`make bench`): measure SarahService against its ceilings, print tables.

    python -m bench [--duration 10] [--leads 1000,1000000] [--soak-minutes 10]
                    [--server-args "--threads 32"] ...

Everything runs on free loopback ports in a temporary folder (kept with --keep).
"""

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import h2load, profile, report, side_tables
from bench.cells import sections
from bench.floor import Shape, floor_table, main_table_figures, run_floor
from bench.header import header
from bench.overload import run_overload
from bench.retention import run_retention
from bench.run import Options, Results, run_main, run_scale
from bench.seed import seed
from bench.soak import run_soak
from bench.targets import issue25_table, targets_table
from bench.watch import WatchResults, run_cost, run_latency
from bench.workers import CHOICES, run_workers
from bench.workload import RPCS
from server.config import Config

_LOGGER = logging.getLogger("bench")


def _counts(text: str) -> list[int]:
    counts = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 2:
        raise argparse.ArgumentTypeError("lead counts are integers of at least 2")
    return counts


def _rpcs(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = set(chosen) - set(RPCS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(RPCS)}")
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds measured per figure (default 10)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds of load before each measurement (default 1)")
    p.add_argument("--leads", type=_counts, default=[1000, 1_000_000],
                   help="lead counts of the databases, comma-separated (default 1000,1000000); "
                        "the main table uses the smallest, the scale targets compare the "
                        "largest with the smallest")
    p.add_argument("--concurrency", type=int, default=16,
                   help="requests in flight for the main table (default 16)")
    p.add_argument("--h2-connections", type=int, default=4,
                   help="HTTP/2 connections the gRPC load spreads them over (default 4)")
    p.add_argument("--deep-page", type=int, default=1000,
                   help="the ListLeads page compared with page 1 (default 1000)")
    p.add_argument("--soak-minutes", type=float, default=10.0,
                   help="minutes of the memory soak; 0 skips it (default 10)")
    p.add_argument("--server-args", default="",
                   help='extra flags for `python -m server`, e.g. "--workers 2"')
    p.add_argument("--bare-threads", type=int, default=Config().threads,
                   help="the bare servicer's thread pool (default: the server's default, "
                        f"{Config().threads})")
    p.add_argument("--envoy-concurrency", type=int, default=os.cpu_count() or 1,
                   help="Envoy worker threads (default: the machine's CPUs)")
    p.add_argument("--rpcs", type=_rpcs, default=list(RPCS),
                   help=f"RPCs of the main table (default {','.join(RPCS)})")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of GET and POST /sarah/state against the peer and "
                        "the ceilings; the median is the figure (default 3)")
    p.add_argument("--rotate-leads", type=int, default=1000,
                   help="distinct leads UpsertState rotates over in its second row; 0 skips "
                        "it (default 1000)")
    p.add_argument("--workers-choices", default=",".join(CHOICES),
                   help="--workers values of the workers table, comma-separated; empty skips "
                        f"it (default {','.join(CHOICES)})")
    p.add_argument("--no-overload", action="store_true",
                   help="skip the overload table")
    p.add_argument("--watchers", type=int, default=200,
                   help="open WatchLeads streams whose cost to UpsertState is measured "
                        "(default 200; 0 skips that table)")
    p.add_argument("--retention-backlog", type=int, default=300_000,
                   help="old change-log events housekeeping removes while UpsertState's "
                        "latency is measured; 0 skips it (default 300000)")
    p.add_argument("--profile-rpcs", default="GetState,UpsertState,ListLeads,GetStats",
                   help="RPCs profiled after the tables (python -m bench.profile), so each "
                        "gap stands beside what limits it; empty skips them (default: the "
                        "gRPC targets' RPCs)")
    p.add_argument("--profile-seconds", type=int, default=10,
                   help="py-spy's sampling time per profiled RPC (default 10)")
    p.add_argument("--profile-rate", type=int, default=100,
                   help="py-spy's samples per second (default 100)")
    p.add_argument("--floor-writes", type=int, default=3000,
                   help="writes of each floor (python -m bench.floor: the statements of a "
                        "write with the raw driver, SQLite and PostgreSQL); 0 skips the floor "
                        "(default 3000)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work folder (databases, logs, h2load logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    binary = h2load.ensure_h2load()
    version = subprocess.run([binary, "--version"], capture_output=True,
                             text=True).stdout.strip()
    workdir = Path(tempfile.mkdtemp(prefix="sarah-bench-"))
    opts = Options(
        duration=args.duration, warmup=args.warmup, leads=args.leads,
        concurrency=args.concurrency, h2_connections=args.h2_connections,
        deep_page=args.deep_page, server_args=shlex.split(args.server_args),
        bare_threads=args.bare_threads, envoy_concurrency=args.envoy_concurrency,
        rpcs=args.rpcs, workdir=workdir, rounds=max(1, args.rounds),
        rotate_leads=args.rotate_leads,
    )
    started = time.monotonic()
    try:
        dbs = {count: workdir / f"leads-{count}.db" for count in opts.leads}
        for count, db in dbs.items():
            seed(db, count, workdir, opts.server_args)
        results = Results()
        small = min(dbs)
        run_main(opts, dbs[small], small, results)
        floor = None
        if args.floor_writes > 0:
            floor = run_floor(dbs[small], workdir, opts.server_args,
                              Shape(opts.duration, opts.warmup, opts.concurrency,
                                    opts.h2_connections), args.floor_writes,
                              sqlite_server=False, bare=False)
            floor.servers[:0] = main_table_figures(opts.processes, results.main)
        overload = [] if args.no_overload else run_overload(opts, dbs[small])
        choices = tuple(c.strip() for c in args.workers_choices.split(",") if c.strip())
        workers = run_workers(opts, dbs[small], choices) if choices else []
        run_scale(opts, dbs, results)
        watch = WatchResults()
        run_latency(opts, dbs[small], watch)
        if args.watchers > 0:
            run_cost(opts, dbs[small], args.watchers, watch)
        retention = None
        if args.retention_backlog > 0:
            retention = run_retention(opts, small, args.retention_backlog)
        soak = None
        if args.soak_minutes > 0:
            soak = run_soak(dbs[small], small, args.soak_minutes * 60, opts.concurrency,
                            workdir, opts.server_args)
        profiled: list[str] = []
        if args.profile_rpcs.strip():
            profiled = profile.profiles(profile.parse_args([
                "--rpcs", args.profile_rpcs, "--seconds", str(args.profile_seconds),
                "--rate", str(args.profile_rate),
                "--leads", str(small), "--concurrency", str(opts.concurrency),
                "--server-args", args.server_args]), workdir)
    finally:
        if args.keep:
            _LOGGER.info("work folder kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    lines = sections(
        header(opts, version),
        report.main_table(opts, results),
        report.ceiling_table(opts, results),
        report.door_table(opts, results),
        targets_table(opts, results, overload),
        floor_table(floor) if floor else [],
        issue25_table(opts, results, floor),
        side_tables.overload_table(overload) if overload else [],
        side_tables.workers_table(results, workers) if workers else [],
        report.scale_table(opts, results),
        side_tables.watch_tables(watch),
        side_tables.retention_table(retention),
        side_tables.soak_lines(soak),
        (["where the time goes (python -m bench.profile: py-spy --gil, one worker process)",
          *profiled] if profiled else []),
        [f"bench finished in {(time.monotonic() - started) / 60:.1f} min"],
    )
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
