"""Server configuration from flags and environment variables, defaults written beside each."""

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any

from sarah import VERSION
from server.core.phones import check_region
from server.storage.database import DEFAULT_URL

DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
# Chosen by measurement (bench/README.md, "`--workers 2`" and the workers table of "Issue 14:
# the recorded run"; docs/operations.md, "Cores and workers"): one process per core.
DEFAULT_WORKERS = "auto"


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    database_url: str = DEFAULT_URL
    default_region: str = "ID"
    threads: int = 8
    # Unary calls that may wait for one of the threads; more are refused at once.
    max_queued_calls: int = 16
    workers: int = 1
    db_pool_size: int = 16
    # One writer thread commits the process's writes in groups (storage/group_commit.py).
    group_commit: bool = True
    migrate: bool = True
    grace_seconds: float = 10.0
    drain_seconds: float = 0.0
    log_format: str = "text"
    api_keys_file: str = ""
    insecure: bool = False
    open_reflection: bool = False
    # Off for servers built in code (tests start many); the command line's default is on.
    metrics_listen: str = ""
    # WatchLeads (core/delivery.py) and the change log's retention.
    max_watchers: int = 256
    watch_buffer: int = 1000
    watch_heartbeat_seconds: float = 15.0
    watch_poll_seconds: float = 0.25
    history_days: float = 90.0
    # How often the health service asks the database whether it answers (api/health.py).
    health_check_seconds: float = 5.0
    # Housekeeping (core/housekeeping.py): None leaves inactive leads alone (the default).
    purge_inactive_days: float | None = None
    housekeeping_seconds: float = 60.0


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset and cpusets count; a
    container's CPU quota does not, so set --workers there)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _workers(value: str) -> int | None:
    """A number of worker processes, or None for `auto`."""
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {value!r}") from None


def _auto_workers(listen: str) -> int:
    """`--workers auto`: one process per CPU, each on its own port for Envoy to balance
    over; on port 0 one, as the workers' ports could not be known to list them anywhere."""
    try:
        port = int(listen.rpartition(":")[2])
    except ValueError:
        return 1  # not host:port: the server says so when it tries to listen
    return cpus() if port else 1


def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _days(value: str) -> float:
    """A number of days above 0 (fractions allowed: tests use seconds' worth)."""
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {value!r}") from None
    if not (math.isfinite(days) and days > 0):
        raise argparse.ArgumentTypeError(f"must be a number of days above 0, got {value!r}")
    return days


def _days_or_off(value: str) -> float | None:
    return None if value.strip().lower() in ("", "off") else _days(value)


def _option(parser: argparse.ArgumentParser, env: dict[str, str], flag: str,
            default: object, help: str, *, shown: str | None = None,
            **kwargs: Any) -> None:
    """`flag`, whose default its environment variable (SARAH_ and the flag's name) replaces;
    its help ends by naming both, the default as `shown` (floats as %g)."""
    var = "SARAH_" + flag.removeprefix("--").upper().replace("-", "_")
    if shown is None:
        shown = f"{default:g}" if isinstance(default, float) else str(default)
    parser.add_argument(flag, default=env.get(var, str(default)),
                        help=f"{help} (env {var}, default {shown})", **kwargs)


def add_database_args(parser: argparse.ArgumentParser, env: dict[str, str]) -> None:
    """--database-url and --db-pool-size, shared by the server and its admin commands."""
    d = Config()
    _option(parser, env, "--database-url", d.database_url,
            "playhouse database URL: sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB")
    _option(parser, env, "--db-pool-size", d.db_pool_size, "most database connections held at once",
            type=int)


def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Read the configuration; a flag beats its environment variable, which beats the default."""
    env = dict(os.environ) if env is None else env
    d = Config()
    parser = argparse.ArgumentParser(
        prog="sarah-server",
        description="Serve sarah.v1.SarahService over gRPC. Admin commands: "
                    "`sarah-server migrate`, `copy-data`, `backup`, `restore`, `hash-key` "
                    "(see `sarah-server COMMAND --help`).",
    )
    parser.add_argument("--version", action="version", version=f"sarah-server {VERSION}")
    _option(parser, env, "--listen", d.listen,
            "host:port to listen on; port 0 picks a free one")
    add_database_args(parser, env)
    _option(parser, env, "--default-region", d.default_region,
            "region for phone numbers without a country code")
    _option(parser, env, "--threads", d.threads, "worker threads", type=int)
    _option(parser, env, "--max-queued-calls", d.max_queued_calls,
            "calls that may wait for a free thread; beyond them a call is refused at once with "
            "UNAVAILABLE and retry advice (retry-after), rather than queued until its deadline",
            type=int)
    _option(parser, env, "--workers", DEFAULT_WORKERS,
            "server processes, or `auto`: one per CPU this process may run on (one if "
            "--listen's port is 0); worker i listens on the --listen port + i (and metrics port "
            "+ i), each a separate endpoint for Envoy", type=_workers)
    _option(parser, env, "--group-commit", "on",
            "commit the writes that queue up meanwhile in one transaction, each caller answered "
            "after its commit; off gives every write a transaction of its own", type=_flag)
    _option(parser, env, "--migrate", "true",
            "bring the schema up to date at start-up; with false, refuse to start on an older "
            "schema", type=_flag)
    _option(parser, env, "--grace-seconds", d.grace_seconds,
            "how long calls in flight may finish at shutdown", type=float)
    _option(parser, env, "--drain-seconds", d.drain_seconds,
            "at shutdown, keep serving this long after reporting NOT_SERVING, so a load "
            "balancer's health check moves traffic away first", type=float)
    _option(parser, env, "--log-format", d.log_format, "log line format",
            choices=("text", "json"))
    parser.add_argument("--api-keys-file", default=env.get("SARAH_API_KEYS_FILE", ""),
                        help="file of API keys (`KEY-or-sha256:HASH WORKSPACE-or-* [LABEL]` "
                             "per line), re-read on SIGHUP; without it every call is let in, "
                             "so the server listens on loopback only (env SARAH_API_KEYS_FILE)")
    parser.add_argument("--insecure", action="store_true",
                        default=_flag(env.get("SARAH_INSECURE", "false")),
                        help="allow listening beyond loopback without API keys "
                             "(env SARAH_INSECURE)")
    parser.add_argument("--open-reflection", action="store_true",
                        default=_flag(env.get("SARAH_OPEN_REFLECTION", "false")),
                        help="serve reflection without an API key (env SARAH_OPEN_REFLECTION)")
    _option(parser, env, "--metrics-listen", DEFAULT_METRICS_LISTEN,
            "loopback host:port of the Prometheus /metrics page; port 0 picks one, empty turns "
            "it off")
    _option(parser, env, "--max-watchers", d.max_watchers,
            "most open WatchLeads streams; each holds a thread of its own, beside the --threads "
            "that serve other calls", type=int)
    _option(parser, env, "--watch-buffer", d.watch_buffer,
            "events a watcher may fall behind before it is dropped with RESOURCE_EXHAUSTED",
            type=int)
    _option(parser, env, "--watch-heartbeat-seconds", d.watch_heartbeat_seconds,
            "a watch stream silent this long sends a heartbeat", type=float)
    _option(parser, env, "--watch-poll-seconds", d.watch_poll_seconds,
            "the change log is read at least this often, for commits of other processes that "
            "no notification announced", type=float)
    _option(parser, env, "--history-days", d.history_days,
            "days of events the change log keeps; a watcher can resume from within them",
            type=_days)
    _option(parser, env, "--health-check-seconds", d.health_check_seconds,
            "the database is asked this often whether it answers; while it does not, health "
            "reports NOT_SERVING", type=float)
    _option(parser, env, "--purge-inactive-days", "off",
            "erase, as DeleteState does, every lead with no message for this many days; `off` "
            "keeps them", type=_days_or_off)
    _option(parser, env, "--housekeeping-seconds", d.housekeeping_seconds,
            "how often the purge and the history's retention run, in small batches", type=float)
    args = parser.parse_args(argv)
    try:
        region = check_region(args.default_region)
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.max_queued_calls < 0:
        parser.error("--max-queued-calls must be 0 or more")
    workers = _auto_workers(args.listen) if args.workers is None else args.workers
    if workers < 1:
        parser.error("--workers must be at least 1")
    if args.db_pool_size < 1:
        parser.error("--db-pool-size must be at least 1")
    if args.max_watchers < 0 or args.watch_buffer < 1:
        parser.error("--max-watchers must be 0 or more and --watch-buffer at least 1")
    if args.watch_heartbeat_seconds <= 0 or args.watch_poll_seconds <= 0:
        parser.error("--watch-heartbeat-seconds and --watch-poll-seconds must be above 0")
    if args.health_check_seconds <= 0:
        parser.error("--health-check-seconds must be above 0")
    if not (math.isfinite(args.housekeeping_seconds) and args.housekeeping_seconds > 0):
        parser.error("--housekeeping-seconds must be above 0")
    return Config(
        listen=args.listen,
        database_url=args.database_url,
        default_region=region,
        threads=args.threads,
        max_queued_calls=args.max_queued_calls,
        workers=workers,
        db_pool_size=args.db_pool_size,
        group_commit=args.group_commit,
        migrate=args.migrate,
        grace_seconds=args.grace_seconds,
        drain_seconds=args.drain_seconds,
        log_format=args.log_format,
        api_keys_file=args.api_keys_file,
        insecure=args.insecure,
        open_reflection=args.open_reflection,
        metrics_listen=args.metrics_listen,
        max_watchers=args.max_watchers,
        watch_buffer=args.watch_buffer,
        watch_heartbeat_seconds=args.watch_heartbeat_seconds,
        watch_poll_seconds=args.watch_poll_seconds,
        history_days=args.history_days,
        health_check_seconds=args.health_check_seconds,
        purge_inactive_days=args.purge_inactive_days,
        housekeeping_seconds=args.housekeeping_seconds,
    )
