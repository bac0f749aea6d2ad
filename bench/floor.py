"""`python -m bench.floor`: the floor of a write beside what the server spends on one
(issue 25).

    python -m bench.floor [--writes 3000] [--duration 5] [--leads 1000]
                          [--server-args "--workers 1"] [--no-postgres]

The floor: the statements one UpsertState runs (bench/floor_writes.py), the server's own
SQL text, with the raw driver in one thread, each write its own transaction, on a copy of
the bench's database (the real migrated schema, its indexes, the seeded leads and events);
CPU per write from the process's own clock. On PostgreSQL (the embedded one of
harness/postgres.py, or SARAH_TEST_POSTGRES_URL's; the same leads copied in by
`copy-data`) with psycopg, and the CPU of the database's processes counted too.

Beside it: the real server (`python -m server`, as `make bench` starts it) driven by
h2load with the bench's UpsertState, and its CPU per call from /proc, all its processes,
over the measured phase (on PostgreSQL, plus the database's processes); and the bare
grpcio servicer's (bench/bare_server.py), which is what grpcio alone costs a call.
Between them: the write path's own CPU in one thread without gRPC (bench/write_path.py),
and the bare servicer burning that much CPU in Python per call, which is what grpcio's
server alone makes of that much work.
"""

import argparse
import base64
import contextlib
import json
import logging
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg

from bench import cells, workload
from bench.cpu import CpuMeter, tree_cpu_seconds
from bench.floor_writes import SHAPES, FloorWrites, stored_lead
from bench.procs import bare_server, server_on, server_processes
from bench.run import BARE_NAMES, PEER_NAMES, Key, Measured, measure
from bench.seed import phone, seed
from bench.write_path import WritePath, write_path_cpu
from harness.postgres import fresh_postgres_database, postgres_server
from server.config import Config
from server.core.service import now_us
from server.storage.copying import copy_data
from server.storage.database import LOCK_WAIT_MS, open_database
from server.storage.models import bind_models
from server.storage.statements import Statements

_LOGGER = logging.getLogger(__name__)
SQLITE, POSTGRES = "SQLite", "PostgreSQL"
# The floor of the bench's write in groups, as group commit runs them (8: about what 16
# calls in flight make of it).
GROUP = 8
GROUPED = f"{SHAPES[0]}, {GROUP} a transaction"
# How the rows of the bare servicers begin: answering a constant, or burning the write
# path's CPU first.
CONSTANT = "(a constant answer)"
BURNED = "bare grpcio + "


@dataclass(frozen=True)
class FloorFigure:
    """One shape of write with the raw driver: per write, in microseconds."""

    database: str
    shape: str
    statements: int  # besides BEGIN and COMMIT
    cpu_us: float  # this process and, on PostgreSQL, the database's processes
    db_cpu_us: float | None  # of which the database's processes (PostgreSQL)
    wall_us: float


@dataclass(frozen=True)
class ServerFigure:
    """UpsertState over gRPC on a server: its figures and the database's CPU beside them."""

    database: str
    what: str
    measured: Measured
    db_cores: float | None = None  # PostgreSQL's processes over the same phase

    @property
    def cpu_us(self) -> float | None:
        cores = self.measured.server_cores
        rps = self.measured.result.rps
        if cores is None or rps <= 0:
            return None
        return (cores + (self.db_cores or 0.0)) / rps * 1e6

    @property
    def db_cpu_us(self) -> float | None:
        rps = self.measured.result.rps
        return None if self.db_cores is None or rps <= 0 else self.db_cores / rps * 1e6


@dataclass
class FloorResults:
    floors: list[FloorFigure] = field(default_factory=list)
    servers: list[ServerFigure] = field(default_factory=list)
    write_path: WritePath | None = None  # the service's work in one thread, no gRPC

    def floor(self, database: str, shape: str = SHAPES[0]) -> FloorFigure | None:
        return next((f for f in self.floors if (f.database, f.shape) == (database, shape)),
                    None)

    def server(self, database: str, what: str = "SarahService") -> ServerFigure | None:
        return next((s for s in self.servers
                     if s.database == database and s.what.startswith(what)), None)

    def bare_cpu_us(self) -> float | None:
        """The cheaper bare servicer's CPU per call, answering a constant."""
        return min((s.cpu_us for s in self.servers if CONSTANT in s.what and s.cpu_us),
                   default=None)

    def burned(self) -> ServerFigure | None:
        """The bare grpcio servicer burning the write path's CPU per call."""
        return self.server("-", BURNED)


def _timed(write: Callable[[int], None], writes: int, database: str, shape: str,
           statements: Callable[[], int], db_pids: list[int]) -> FloorFigure:
    warm = max(24, writes // 10 // GROUP * GROUP)  # caches, prepared statements
    for i in range(warm):
        write(i)
    cpu, wall, db_cpu = time.process_time(), time.perf_counter(), tree_cpu_seconds(db_pids)
    for i in range(warm, warm + writes):
        write(i)
    db_us = (tree_cpu_seconds(db_pids) - db_cpu) / writes * 1e6 if db_pids else None
    own_us = (time.process_time() - cpu) / writes * 1e6
    figure = FloorFigure(database, shape, statements(), own_us + (db_us or 0.0), db_us,
                         (time.perf_counter() - wall) / writes * 1e6)
    _LOGGER.info("floor, %s, %s: %.0f µs CPU a write", database, shape, figure.cpu_us)
    return figure


def sqlite_floor(path: Path, writes: int) -> list[FloorFigure]:
    """Both shapes on the SQLite file `path`, as the server opens it (WAL,
    synchronous=NORMAL, BEGIN IMMEDIATE)."""
    db = open_database(f"sqlite:///{path}", pool_size=1)
    bind_models(db)
    sql = Statements(db)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in (f"busy_timeout = {LOCK_WAIT_MS}", "journal_mode = wal",
                       "synchronous = normal"):
            conn.execute(f"PRAGMA {pragma}")
        writer = FloorWrites(sql, conn.execute, False,
                             *stored_lead(sql, conn.execute, "", phone(0)))
        figures = []
        for shape in SHAPES:
            def write(i: int, shape: str = shape) -> None:
                conn.execute("BEGIN IMMEDIATE")
                writer.write(shape, i, now_us())
                conn.execute("COMMIT")
            figures.append(_timed(write, writes, SQLITE, shape, lambda: writer.statements, []))

        def grouped(i: int) -> None:  # what group commit can make of the same writes
            if i % GROUP == 0:
                conn.execute("BEGIN IMMEDIATE")
            writer.write(SHAPES[0], i, now_us())
            if i % GROUP == GROUP - 1:
                conn.execute("COMMIT")
        figures.append(_timed(grouped, writes - writes % GROUP, SQLITE, GROUPED,
                              lambda: writer.statements, []))
        return figures
    finally:
        conn.close()


def postmaster(url: str) -> int | None:
    """The pid of the PostgreSQL server of `url` if it runs on this machine (its /proc
    readable), else None."""
    with psycopg.connect(url) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert backend is not None
    try:
        stat = Path(f"/proc/{backend[0]}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def postgres_floor(url: str, writes: int, db_pid: int | None) -> list[FloorFigure]:
    """Both shapes on the PostgreSQL database `url`, with psycopg (synchronous_commit on,
    the default, as the server runs)."""
    db = open_database(url, pool_size=1)
    bind_models(db)
    sql = Statements(db)
    with psycopg.connect(url) as conn:
        writer = FloorWrites(sql, conn.execute, True,
                             *stored_lead(sql, conn.execute, "", phone(0)))
        conn.commit()
        figures = []
        for shape in SHAPES:
            def write(i: int, shape: str = shape) -> None:
                writer.write(shape, i, now_us())
                conn.commit()
            figures.append(_timed(write, writes, POSTGRES, shape, lambda: writer.statements,
                                  [db_pid] if db_pid else []))
    return figures


@dataclass(frozen=True)
class Shape:
    """How the servers are driven: as the bench's main table drives UpsertState."""

    duration: float = 5.0
    warmup: float = 1.0
    concurrency: int = 16
    h2_connections: int = 4

    def loads(self) -> dict[str, float | int]:
        """workload.grpc_loads' keyword arguments."""
        return {"duration": self.duration, "warmup": self.warmup,
                "concurrency": self.concurrency, "h2_connections": self.h2_connections}


# The bench's UpsertState (its unknown phone, for DeleteState, plays no part).
_UPSERT = workload.calls(phone(0), phone(1))["UpsertState"]


def server_upsert(database: str, url: str, workdir: Path, server_args: list[str], shape: Shape,
                  db_pid: int | None, bare: bool = True) -> list[ServerFigure]:
    """The real server on `url`, UpsertState over gRPC from h2load; with `bare`, then the
    bare grpcio servicer answering the real server's answer."""
    label = f"floor-server-{database}"
    figures = []
    server = server_on(url, workdir, server_args, label)
    try:
        with grpc.insecure_channel(server.target) as channel:
            answer = workload.invoke(channel, _UPSERT)
        db_meter = CpuMeter([db_pid] if db_pid else [], skip_s=shape.warmup)
        with db_meter.metering():
            measured = measure(workload.grpc_loads(_UPSERT, server.ports, workdir, label,
                                                   **shape.loads()),
                               server, None, "UpsertState", workdir, label)
        processes = server_processes(server_args)
        figures.append(ServerFigure(
            database, f"SarahService, {processes} process(es): UpsertState over gRPC",
            measured, db_meter.cores if db_pid else None))
    finally:
        server.stop()
    if bare:
        figures.append(_bare_upsert(answer, workdir, server_args, shape, "floor-bare",
                                    f"bare grpcio {CONSTANT}"))
    return figures


def _bare_upsert(answer: bytes, workdir: Path, server_args: list[str], shape: Shape,
                 label: str, what: str, burn_us: float = 0.0) -> ServerFigure:
    """The bare grpcio servicer answering `answer` to the bench's UpsertState (after
    burning `burn_us` of CPU), as many processes as the server, driven as the server is."""
    responses = workdir / f"{label}-responses.json"
    responses.write_text(json.dumps({"UpsertState": base64.b64encode(answer).decode()}))
    bare_grpcio = bare_server(responses, workdir, Config().threads,
                              server_processes(server_args), burn_us=burn_us)
    try:
        measured = measure(workload.grpc_loads(_UPSERT, bare_grpcio.ports, workdir, label,
                                               **shape.loads()),
                           bare_grpcio, None, "UpsertState", workdir, label)
    finally:
        bare_grpcio.stop()
    return ServerFigure("-", f"{what}: UpsertState over gRPC", measured)


@contextlib.contextmanager
def postgres_copy(sqlite_db: Path) -> Iterator[tuple[str, int | None]]:
    """A fresh PostgreSQL database holding what `sqlite_db` holds (copy-data), and the pid
    of its server if it runs here."""
    with postgres_server() as server_url:
        url = fresh_postgres_database(server_url, "sarah_floor")
        copied = copy_data(f"sqlite:///{sqlite_db}", url)
        _LOGGER.info("floor: copied %d leads and %d events into PostgreSQL",
                     copied.conversations, copied.events)
        yield url, postmaster(url)


def run_floor(db: Path, workdir: Path, server_args: list[str], shape: Shape,
              writes: int, postgres: bool = True, sqlite_server: bool = True,
              bare: bool = True) -> FloorResults:
    """The floor on SQLite (a copy of the bench's seeded `db`) and, with
    `postgres`, on PostgreSQL, each beside the server on the same database (on SQLite only
    with `sqlite_server`: `make bench` takes its main table's figure instead)."""
    results = FloorResults()
    floor_db = workdir / "floor.db"
    shutil.copy(db, floor_db)
    results.floors += sqlite_floor(floor_db, writes)
    # The service's own work in one thread, then grpcio's server doing that much Python.
    results.write_path = write_path_cpu(floor_db, _UPSERT.request, writes)
    results.servers.append(_bare_upsert(
        results.write_path.answer, workdir, server_args, shape, "floor-burn",
        f"{BURNED}{results.write_path.cpu_us:.0f} µs of Python a call (the write path's CPU)",
        burn_us=results.write_path.cpu_us))
    if sqlite_server:
        results.servers += server_upsert(SQLITE, f"sqlite:///{floor_db}", workdir,
                                         server_args, shape, None, bare)
    if postgres:
        with postgres_copy(db) as (url, pid):
            results.floors += postgres_floor(url, writes, pid)
            results.servers += server_upsert(POSTGRES, url, workdir, server_args,
                                             shape, pid, bare=False)
    return results


def main_table_figures(processes: int, main: dict[Key, Measured]) -> list[ServerFigure]:
    """The CPU per call of `make bench`'s main table (same run): the server's UpsertState
    over gRPC, the bare servicers', and POST /sarah/state on the server (behind Envoy, whose
    CPU is not counted) and on each peer (the median round)."""
    rows = [(SQLITE, f"SarahService, {processes} process(es): UpsertState over gRPC",
             ("UpsertState", "gRPC", "real")),
            *(("-", f"{name} {CONSTANT}: UpsertState over gRPC",
               ("UpsertState", "gRPC", stack)) for stack, name in BARE_NAMES.items()),
            (SQLITE, "SarahService behind Envoy: POST /sarah/state",
             ("UpsertState", "HTTP/JSON", "real")),
            *((SQLITE, f"{name}: POST /sarah/state", ("UpsertState", "HTTP/JSON", stack))
              for stack, name in PEER_NAMES.items())]
    return [ServerFigure(database, what, main[key]) for database, what, key in rows
            if key in main]


def floor_table(results: FloorResults) -> list[str]:
    """Each floor and each server's CPU per call, a server's over the floor of the bench's
    UpsertState on the same database."""
    header = ["write: CPU per call", "database", "statements", "CPU µs", "of it the database",
              "req/s", "x floor"]
    rows = []
    for f in results.floors:
        rows.append([f"raw driver, one thread: {f.shape}", f.database,
                     f"{f.statements} + BEGIN, COMMIT", f"{f.cpu_us:.0f}",
                     "-" if f.db_cpu_us is None else f"{f.db_cpu_us:.0f}",
                     f"{1e6 / f.wall_us:.0f}", "-"])
    if results.write_path is not None:
        floor = results.floor(SQLITE)
        rows.append(["SarahService's write path, one thread, no gRPC", SQLITE, "-",
                     f"{results.write_path.cpu_us:.0f}", "-",
                     f"{1e6 / results.write_path.wall_us:.0f}",
                     cells.fmt_ratio(cells.ratio(results.write_path.cpu_us,
                                                 floor.cpu_us if floor else None))])
    for s in results.servers:
        floor = results.floor(s.database)
        rows.append([s.what, s.database, "-", "-" if s.cpu_us is None else f"{s.cpu_us:.0f}",
                     "-" if s.db_cpu_us is None else f"{s.db_cpu_us:.0f}",
                     cells.rps(s.measured.result.rps),
                     cells.fmt_ratio(cells.ratio(s.cpu_us, floor.cpu_us if floor else None))])
    notes = ["(raw driver: the server's own SQL text (bench/floor_writes.py), each write a "
             f"transaction but in the row of {GROUP} a transaction, CPU of this process and on "
             "PostgreSQL of the database's processes; its req/s is one thread's. The others: "
             "h2load at the main table's concurrency, CPU of every process of the stack "
             "measured (Envoy's not) from /proc over the measured phase, on PostgreSQL plus "
             "the database's processes. The write path: the servicer's body (convert, "
             "validate, the store's write) called in a loop in one thread on the same SQLite "
             "copy, this process's CPU; the bare grpcio servicer then burns that much CPU in "
             "Python per UpsertState: what grpcio's server makes of the service's work "
             "without any of its waits)"]
    return cells.table(header, rows) + [""] + notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    p.add_argument("--writes", type=int, default=3000, help="writes per floor (default 3000)")
    p.add_argument("--duration", type=float, default=5.0,
                   help="seconds each server is measured (default 5)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--leads", type=int, default=1000)
    p.add_argument("--server-args", default="", help='flags for `python -m server`')
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument("--no-bare", action="store_true", help="leave out the bare servicer")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="sarah-floor-"))
    try:
        server_args = shlex.split(args.server_args)
        db = workdir / f"leads-{args.leads}.db"
        seed(db, args.leads, workdir, server_args)
        results = run_floor(db, workdir, server_args,
                            Shape(args.duration, args.warmup), args.writes,
                            postgres=not args.no_postgres, bare=not args.no_bare)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(floor_table(results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
