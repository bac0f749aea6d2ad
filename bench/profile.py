"""Where the real server's time goes under one RPC's load: py-spy, summed by layer.

    python -m bench.profile [--rpcs GetState,UpsertState] [--seconds 20] [--leads 1000]
                            [--watchers 200 [--watch-workspace ID]]

The server runs as `make bench` runs it, h2load drives one RPC over gRPC, and
`py-spy record --gil --native` samples only the thread holding the GIL: a Python gRPC
server is GIL-bound (about one core busy however many threads it has), so those samples
are the time that limits throughput. Each sample counts once, for the layer of its
innermost recognisable frame (sqlite's C code under peewee counts as sqlite, peewee
under our storage layer as peewee). With --watchers, that many WatchLeads streams are
held open (bench/watchers.py, as `make bench` measures their cost) while the RPC runs,
each seeing every write unless --watch-workspace names another workspace. Needs py-spy
(`pip install -e '.[dev]'`) and root or ptrace.
"""

import argparse
import collections
import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import h2load, workload
from bench.procs import real_server
from bench.seed import phone, seed
from bench.watch import watchers_open

# (layer, test on one frame "function (file:line)" or "function (library.so)")
_LAYERS = (
    ("sqlite (C library and _sqlite3 driver)",
     lambda f: f.startswith("sqlite3") or "sqlite3." in f or "_sqlite3" in f),
    ("grpc (cygrpc and C-core)", lambda f: "cygrpc" in f or "libgrpc" in f),
    ("grpc (Python: grpc/_server.py ...)", lambda f: "(grpc/" in f),
    ("peewee", lambda f: "peewee.py" in f or "(playhouse/" in f),
    ("phonenumbers", lambda f: "(phonenumbers/" in f),
    ("protobuf", lambda f: "(google/protobuf/" in f or "_message." in f or "upb" in f),
    ("logging (the per-call log line)", lambda f: "(logging/" in f),
    ("SarahService code (server/)", lambda f: "(server/" in f),
    ("threads and locks (threading, futures)",
     lambda f: "(threading.py" in f or "(concurrent/" in f or "(queue.py" in f),
)
# (what, a substring of a frame): the share of samples with such a frame on the stack
_INCLUSIVE = (
    ("gRPC worker: the handler and everything grpcio does around it", "_WorkItem.run ("),
    ("a watcher's stream (WatchLeads) and all inside", "WatchLeads ("),
    ("  delivery (server/core/delivery.py)", "(server/core/delivery.py"),
    ("  grpcio sending a streamed message", "_send_response ("),
    ("the change log's tailer", "_tail ("),
    ("the server's interceptors (call log, metrics) and all inside", "(server/api/interceptors.py"),
    ("  writing the call log line", "Logger.info ("),
    ("  the servicer method", "(server/api/servicer.py"),
    ("    the storage layer (peewee and sqlite)", "(server/storage/"),
    ("      peewee building SQL text", "Context.sql ("),
    ("      peewee turning rows into model objects", "CursorWrapper.fill_cache ("),
    ("      sqlite3 cursor.execute", "Database.execute_sql ("),
    ("    rules: validation and phone normalisation", "(server/core/rules.py"),
    ("    convert: protobuf <-> Lead", "(server/api/convert.py"),
)


def _layer(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, matches in _LAYERS:
            if matches(frame):
                return name
    python = [f for f in stack if ".py:" in f]
    return f"other Python ({python[-1]})" if python else "other native"


def summarise(raw: Path, top: int = 12, held: str = " holding the GIL") -> list[str]:
    """py-spy's raw output (collapsed stacks, one "frames count" line each) by layer."""
    layers: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        stack, n = frames.split(";"), int(count)
        total += n
        layers[_layer(stack)] += n
        leaves[next((f for f in reversed(stack) if ".py:" in f), stack[-1])] += n
        for name, key in _INCLUSIVE:
            if any(key in f for f in stack):
                inclusive[name] += n

    def pct(n: int) -> str:
        return f"{100 * n / max(total, 1):5.1f}%"

    lines = [f"  {total} samples{held}; by layer (innermost frame):"]
    lines += [f"    {pct(n)}  {name}" for name, n in layers.most_common()]
    lines.append("  inclusive (a frame of the stack matches):")
    lines += [f"    {pct(inclusive[name])}  {name}" for name, _ in _INCLUSIVE]
    lines.append(f"  top {top} innermost Python frames:")
    lines += [f"    {pct(n)}  {name}" for name, n in leaves.most_common(top)]
    return lines


def _cpu_ticks(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def profile(rpc: str, args: argparse.Namespace, workdir: Path, py_spy: str) -> list[str]:
    db = workdir / f"profile-{rpc}.db"
    server_args = shlex.split(args.server_args)
    if "--workers" not in server_args:
        # py-spy samples one process: one worker, not the supervisor of `auto`'s workers.
        server_args = ["--workers", "1", *server_args]
    seed(db, args.leads, workdir, server_args)
    if args.watchers > 0:
        server_args += ["--max-watchers", str(args.watchers + 16)]
    server = real_server(db, workdir, server_args, name=f"server-profile-{rpc}")
    watching = (watchers_open(server, args.watchers, args.watch_workspace, workdir)
                if args.watchers > 0 else contextlib.nullcontext())
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        stack.enter_context(watching)
        call = workload.calls(phone(0), phone(args.leads + 1))[rpc]
        load = workload.grpc_load(call, server.port, workdir, f"profile-{rpc}",
                                  concurrency=args.concurrency, duration=args.seconds + 3,
                                  warmup=0, log_latencies=False)
        results: list[h2load.Result] = []
        driver = threading.Thread(target=lambda: results.append(
            h2load.run(load, workdir / "unused.tsv")))
        driver.start()
        time.sleep(1.5)
        raw = workdir / f"profile-{rpc}.txt"
        before, start = _cpu_ticks(server.proc.pid), time.monotonic()
        gil = ["--gil"] if args.samples == "gil" else []
        subprocess.run([py_spy, "record", "--pid", str(server.proc.pid), *gil, "--native",
                        "--rate", str(args.rate), "--duration", str(args.seconds),
                        "--format", "raw", "--output", str(raw)], check=True,
                       capture_output=True)
        after, wall = _cpu_ticks(server.proc.pid), time.monotonic() - start
        driver.join()
    if args.keep_raw:
        shutil.copy(raw, Path.cwd() / raw.name)
    user, system = ((a - b) / 100 / wall for a, b in zip(after, before, strict=True))
    watched = (f", {args.watchers} watchers of {args.watch_workspace or 'every workspace'}"
               if args.watchers > 0 else "")
    return [f"{rpc}{watched}: {results[0].rps:.0f} req/s at {args.concurrency} in flight (py-spy "
            f"slows it while sampling); server CPU {user + system:.2f} cores "
            f"(user {user:.2f}, system {system:.2f})",
            *summarise(raw, held=" holding the GIL" if args.samples == "gil" else " on a CPU"),
            ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rpcs", default="GetState,UpsertState")
    parser.add_argument("--seconds", type=int, default=20, help="sampling time per RPC")
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--server-args", default="")
    parser.add_argument("--watchers", type=int, default=0,
                        help="WatchLeads streams held open during the load (default 0)")
    parser.add_argument("--watch-workspace",
                        help="the watchers' workspace (default: every one, so each sees "
                             "every write)")
    parser.add_argument("--samples", choices=("gil", "cpu"), default="gil",
                        help="gil: only the thread holding the GIL (the time that limits a "
                             "GIL-bound server's throughput); cpu: every thread on a CPU, "
                             "native code outside the GIL too (SQLite, grpc's C-core). "
                             "Default gil")
    parser.add_argument("--keep-raw", action="store_true",
                        help="copy py-spy's raw stacks to ./profile-<RPC>.txt")
    return parser.parse_args(argv)


def profiles(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Each of args.rpcs profiled in turn, as lines: `make bench` prints them under its
    tables, so that each gap stands beside what limits it."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    lines: list[str] = []
    for rpc in args.rpcs.split(","):
        lines += profile(rpc.strip(), args, workdir, py_spy)
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="sarah-profile-"))
    try:
        print("\n".join(profiles(args, workdir)), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
