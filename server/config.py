"""Server configuration: every setting declared once, as a field of Config, from which come
the command line (a flag beats its environment variable, which beats the default), the
defaults of a Config built in code, its checks and the docs' table (tools/config_table.py)."""

import argparse
import os
from dataclasses import dataclass
from typing import Any, Literal

from sarah import VERSION
from server.core.phones import check_region
from server.settings import (
    ConfigError,
    Setting,
    above_zero,
    add_arguments,
    at_least,
    checked,
    days,
    days_or_off,
    finite_above_zero,
    host_port,
    host_port_or_off,
    on_off,
    positive_days,
    positive_days_or_off,
    setting,
    settings_of,
)
from server.storage.database import DEFAULT_URL


def _workers(text: str) -> int | Literal["auto"]:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _workers_check(value: int | str) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and value >= 1:
        return value
    raise ValueError(f"must be a number of processes from 1, or auto, got {value!r}")


def _region(value: str) -> str:
    try:
        return check_region(value)
    except ValueError as exc:
        raise ValueError(f"must name a phone region: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class Config:
    """The server's settings; checked (and the region upper-cased) however it is built."""

    listen: str = setting(
        "127.0.0.1:50051", "host:port to serve gRPC on; port 0 picks a free one",
        check=host_port)
    database_url: str = setting(
        DEFAULT_URL, "database URL: sqlite:///PATH, or postgresql://USER:PASSWORD@HOST:PORT/DB "
                     "with one HOST:PORT or several, comma-separated, for a failover cluster",
        see="High availability")
    default_region: str = setting(
        "ID", "region of phone numbers without a country code", check=_region)
    threads: int = setting(
        8, "worker threads per process (fewer threads pass the GIL around less; `make bench` "
           "measured 4 vs 16)", parse=int, check=at_least(1))
    max_queued_calls: int = setting(
        16, "calls that may wait for a free thread; beyond them a call is refused at once with "
            "`UNAVAILABLE` and retry advice (retry-after), rather than queued until its "
            "deadline", parse=int, check=at_least(0), see="Overload")
    # Chosen by measurement (bench/README.md, "`--workers 2`" and the workers table of "Issue
    # 14: the recorded run"; docs/operations.md, "Cores and workers"): one process per core.
    workers: int | Literal["auto"] = setting(
        "auto", "server processes, or `auto`: one per CPU this process may run on (one when "
                "the `--listen` port is 0); worker i listens on the `--listen` port + i (and "
                "the metrics port + i), each an endpoint that `make run` lists for Envoy",
        parse=_workers, check=_workers_check, see="Cores and workers")
    db_pool_size: int = setting(
        16, "most database connections held at once (each call borrows one)", parse=int,
        check=at_least(1))
    # The process's writes commit in groups, each run by one of its callers
    # (storage/group_commit.py).
    group_commit: bool = setting(
        True, "the writes queued while a group commits go in the next group, one transaction "
              "run by the first of their callers, each caller answered after its commit; `off` "
              "gives every write a transaction of its own", parse=on_off, shown="on")
    migrate: bool = setting(
        True, "bring the schema up to date at start-up; `false` refuses to start on an older "
              "schema", parse=on_off)
    drain_seconds: float = setting(
        0.0, "at shutdown, keep serving this long after reporting `NOT_SERVING`, so a load "
             "balancer's health check moves traffic away first (2 in `make cluster`)",
        parse=float)
    grace_seconds: float = setting(
        10.0, "how long calls in flight may finish after SIGTERM/SIGINT", parse=float)
    log_format: str = setting(
        "text", "log line format: `text`, or `json` for a log collector",
        choices=("text", "json"))
    # How often the health service asks the database whether it answers (api/health.py).
    health_check_seconds: float = setting(
        5.0, "how often the health service asks the database whether it can serve (it answers, "
             "and as a primary); while it cannot, health reports `NOT_SERVING` and asks every "
             "second", parse=float, check=above_zero)
    api_keys_file: str = setting(
        "", "file of API keys (`KEY-or-sha256:HASH WORKSPACE-or-* [LABEL]` per line), re-read "
            "on SIGHUP; without it every call is let in, so the server listens on loopback only",
        see="Security")
    insecure: bool = setting(
        False, "allow listening beyond loopback without API keys", parse=on_off, switch=True)
    open_reflection: bool = setting(
        False, "serve reflection without an API key when keys are required", parse=on_off,
        switch=True)
    metrics_listen: str = setting(
        "127.0.0.1:9464", "loopback host:port of the Prometheus `/metrics` page; port 0 picks "
                          "one, empty turns it off", check=host_port_or_off)
    # WatchLeads (core/delivery.py) and the change log's retention.
    max_watchers: int = setting(
        256, "most open WatchLeads streams; each holds a thread of its own, beside the "
             "`--threads` that serve other calls", parse=int, check=at_least(0))
    watch_buffer: int = setting(
        1000, "events a watcher may fall behind before it is dropped with `RESOURCE_EXHAUSTED`",
        parse=int, check=at_least(1))
    watch_heartbeat_seconds: float = setting(
        15.0, "a watch stream silent this long sends a heartbeat", parse=float,
        check=above_zero)
    watch_poll_seconds: float = setting(
        0.25, "the change log is read at least this often, for commits of other processes "
              "that no notification announced", parse=float, check=above_zero)
    history_days: float = setting(
        90.0, "days of change-log events kept (a watcher resumes from within them); older "
              "ones are removed by housekeeping", parse=days, check=positive_days)
    # Housekeeping (core/housekeeping.py): None leaves inactive leads alone.
    purge_inactive_days: float | None = setting(
        None, "erase, as `DeleteState` does, every lead with no message for this many days; "
              "`off` keeps them", parse=days_or_off, check=positive_days_or_off, shown="off")
    housekeeping_seconds: float = setting(
        60.0, "how often the purge and the history's retention run, in small batches (also "
              "once at start-up)", parse=float, check=finite_above_zero)

    def __post_init__(self) -> None:
        for s in SETTINGS:
            # Frozen: a value is set once, here, as its check keeps it.
            object.__setattr__(self, s.name, checked(s, getattr(self, s.name)))

    @property
    def worker_count(self) -> int:
        """`workers` as a number: `auto` is one process per CPU, or one on port 0, as the
        workers' ports could not be known to list them anywhere."""
        if isinstance(self.workers, int):
            return self.workers
        return cpus() if int(self.listen.rpartition(":")[2]) else 1


SETTINGS: tuple[Setting, ...] = settings_of(Config)
_DATABASE = tuple(s for s in SETTINGS if s.name in ("database_url", "db_pool_size"))


def cpus() -> int:
    """The CPUs this process may run on (its affinity mask: taskset and cpusets count; a
    container's CPU quota does not, so set --workers there)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def add_database_args(parser: argparse.ArgumentParser, env: dict[str, str]) -> None:
    """--database-url and --db-pool-size, shared by the server and its admin commands."""
    add_arguments(parser, _DATABASE, env)


def parse_args(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Read the configuration; a flag beats its environment variable, which beats the default."""
    env = dict(os.environ) if env is None else env
    parser = argparse.ArgumentParser(
        prog="sarah-server",
        description="Serve sarah.v1.SarahService over gRPC. Admin commands: "
                    "`sarah-server migrate`, `copy-data`, `backup`, `restore`, `hash-key` "
                    "(see `sarah-server COMMAND --help`).",
    )
    parser.add_argument("--version", action="version", version=f"sarah-server {VERSION}")
    add_arguments(parser, SETTINGS, env)
    values: dict[str, Any] = vars(parser.parse_args(argv))
    try:
        return Config(**values)
    except ConfigError as exc:
        parser.error(f"{exc.setting.flag} {exc.problem}")
