"""UpsertState's latency while housekeeping removes a large backlog of history, beside the
same load over the same backlog kept: retention takes a batch of rows per short write
transaction, so a writer waits behind one batch at most, never behind the whole backlog."""

import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench import workload
from bench.procs import real_server
from bench.run import Measured, Options, measure
from bench.seed import phone, seed

_LOGGER = logging.getLogger(__name__)

_DAY_US = 24 * 3600 * 1_000_000
_KEPT_DAYS = "36500"  # the backlog is within the history: nothing to remove
_EVENT = ('{"workspace_id": "", "contact_phone": "+6281200000000", "state": "qualifying", '
          '"lead_score": 45, "lead_temperature": "warm", "name": "Budi", '
          '"business_type": "restaurant", "team_size": 5, "pain_points": ["slow replies"], '
          '"goals": null, "language": "id", "message_count": 3}')
_COLUMNS = ("revision", "workspace_id", "kind", "contact_phone", "business_scoped_user_id",
            "conversation", "changed", "at")


@dataclass(frozen=True)
class Run:
    name: str
    measured: Measured
    left: int  # backlog events still there when the measurement ended


@dataclass(frozen=True)
class RetentionResults:
    backlog: int
    runs: list[Run]


def add_backlog(db: Path, events: int) -> None:
    """Log `events` upserts committed 100 days ago on `db`, which has none yet."""
    con = sqlite3.connect(db, isolation_level=None)
    try:
        required = {name for _, name, _, not_null, default, pk
                    in con.execute("PRAGMA table_info(lead_event)")
                    if (not_null or pk) and default is None}
        if required - set(_COLUMNS):
            raise RuntimeError(f"bench/retention.py cannot fill lead_event's required columns "
                               f"{sorted(required - set(_COLUMNS))}: teach add_backlog them")
        start = time.time_ns() // 1000 - 100 * _DAY_US
        rows = ((r, "", "upserted", phone(r % 1000), "", _EVENT, '["lead_score"]', start + r)
                for r in range(1, events + 1))
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO lead_event ({', '.join(_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
        con.execute('INSERT OR REPLACE INTO log_head ("id", "revision", "pruned_through") '
                    "VALUES (1, ?, 0)", (events,))
        con.execute("COMMIT")
    finally:
        con.close()


def _old_events(db: Path, before_us: int) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM lead_event WHERE at < ?",
                               (before_us,)).fetchone()[0])
    finally:
        con.close()


def run_retention(opts: Options, leads: int, backlog: int) -> RetentionResults:
    """UpsertState over gRPC on `leads` leads and `backlog` old events: first with a
    history long enough to keep them, then with the default one, whose housekeeping
    starts removing them as the server starts and goes on through the measurement."""
    source = opts.workdir / "retention-source.db"
    # No seeded history: the backlog is the whole log, from revision 1.
    seed(source, leads, opts.workdir, opts.server_args, history=False)
    add_backlog(source, backlog)
    call = workload.calls(phone(0), phone(leads + 1))["UpsertState"]
    shape = {"concurrency": opts.concurrency, "h2_connections": opts.h2_connections,
             "duration": opts.duration, "warmup": opts.warmup}
    runs = []
    for name, args in (("backlog kept", ["--history-days", _KEPT_DAYS]),
                       ("backlog being removed", [])):
        db = opts.workdir / f"retention-{len(runs)}.db"
        shutil.copyfile(source, db)
        label = f"retention-{len(runs)}"
        server = real_server(db, opts.workdir, [*opts.server_args, *args], name=label)
        try:
            loads = workload.grpc_loads(call, server.ports, opts.workdir, label, **shape)
            measured = measure(loads, server, None, call.rpc, opts.workdir, label)
            left = _old_events(db, time.time_ns() // 1000 - 99 * _DAY_US)
        finally:
            server.stop()
        _LOGGER.info("%s: %d of %d old events left at the end", name, left, backlog)
        runs.append(Run(name, measured, left))
    return RetentionResults(backlog, runs)
