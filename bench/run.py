"""One bench run: the real stack, its ceilings (bare grpcio and bare grpc.aio, as many
processes as the server runs, over gRPC and through Envoy) and the FastAPI peer side by
side, RPC by RPC."""

import base64
import contextlib
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import h2load, peer_app, rotate, scale_history, workload
from bench.cpu import CpuMeter
from bench.memory import PeakMemory
from bench.procs import (
    GrpcServer,
    PeerProcess,
    bare_server,
    envoy_in_front,
    real_server,
    server_processes,
)
from bench.seed import phone
from harness.envoy import EnvoyProcess
from harness.processes import LoggedProcess
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

PAGE_SIZE = 50  # ListLeads' default, which the bench's requests leave in place


@dataclass(frozen=True)
class Options:
    duration: float
    warmup: float
    leads: list[int]
    concurrency: int
    h2_connections: int
    deep_page: int
    server_args: list[str]
    bare_threads: int
    envoy_concurrency: int
    rpcs: list[str]
    workdir: Path
    rounds: int = 3  # alternating rounds of the HTTP door against the peer (median)
    rotate_leads: int = 1000

    @property
    def processes(self) -> int:
        """The server's processes, and so the ceilings'."""
        return server_processes(self.server_args)

    @property
    def peer_rpcs(self) -> list[str]:
        """The RPCs measured against the FastAPI peer, those of them this run measures."""
        return [rpc for rpc in PEER_RPCS if rpc in self.rpcs]

    @property
    def shape(self) -> dict[str, float | int]:
        return {"concurrency": self.concurrency, "h2_connections": self.h2_connections,
                "duration": self.duration, "warmup": self.warmup}


@dataclass(frozen=True)
class Measured:
    result: h2load.Result
    server_peak: int
    envoy_peak: int | None
    errors: int
    # CPU of the server's processes over the measured phase (after the warm-up), in cores.
    server_cores: float | None = None

    @property
    def cpu_ms_per_call(self) -> float | None:
        """The server's CPU per call: all its processes, over the measured phase."""
        rps = self.result.rps
        return None if self.server_cores is None or rps <= 0 else self.server_cores / rps * 1000


# The HTTP routes measured against the FastAPI peer (bench/peer_app.py serves only these).
PEER_RPCS = ("GetState", "UpsertState")
# The ceilings: bare servicers of each shape grpcio offers; the faster is the ceiling.
BARE_STACKS = ("sync", "aio")
BARE_NAMES = {"sync": "bare grpcio", "aio": "bare grpc.aio"}
# The peers: FastAPI with `def` endpoints (its thread pool) and with `async def` ones (the
# event loop), the same statements; the faster is the peer the targets hold us to.
PEER_STACKS = {"peer-def": "def", "peer-async": "async"}
PEER_NAMES = {"peer-def": "FastAPI peer, def", "peer-async": "FastAPI peer, async def"}

Key = tuple[str, str, str]


@dataclass
class Results:
    """Keyed (rpc, path, stack): path "gRPC" or "HTTP/JSON", stack "real", "sync", "aio"
    (the bare servicers) or a key of PEER_STACKS. A figure measured in several rounds is the median
    round's; `rounds` keeps every round's req/s."""

    main: dict[Key, Measured] = field(default_factory=dict)
    rounds: dict[Key, list[float]] = field(default_factory=dict)
    # ("UpsertState", "gRPC", stack) over opts.rotate_leads leads in rotation
    rotated: dict[Key, Measured] = field(default_factory=dict)
    # (name, lead count) -> measured at concurrency 1 over gRPC
    scale: dict[tuple[str, int], Measured] = field(default_factory=dict)
    deep_page: int = 0


def _failed_calls(server: GrpcServer, offset: int, rpc: str) -> int:
    """Calls of `rpc` the server's call log shows ending in anything but OK, since `offset`."""
    with open(server.log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    pattern = rf"method=/{workload.SERVICE}/{rpc} code=(\w+)"
    return sum(code != "OK" for code in re.findall(pattern, text))


def ceiling(results: dict[Key, Measured], rpc: str, path: str) -> tuple[str, Measured]:
    """The faster bare servicer of this RPC and path: (stack, its figures)."""
    return max(((stack, results[(rpc, path, stack)]) for stack in BARE_STACKS),
               key=lambda found: found[1].result.rps)


def peer(results: dict[Key, Measured], rpc: str) -> tuple[str, Measured] | None:
    """The faster peer shape over HTTP/JSON for this RPC (median rounds): (stack, its
    figures); None where no peer serves it."""
    found = [(stack, results[(rpc, "HTTP/JSON", stack)]) for stack in PEER_STACKS
             if (rpc, "HTTP/JSON", stack) in results]
    return max(found, key=lambda pair: pair[1].result.rps) if found else None


def measure(loads: list[h2load.Load], server: LoggedProcess, envoy: EnvoyProcess | None,
            rpc: str, workdir: Path, label: str, *, refusals_are_errors: bool = True,
            rotation: rotate.Rotation | None = None) -> Measured:
    """Run the loads (or the rotating generator) against `server`, its memory sampled.
    Errors: failed requests, non-2xx answers (unless refusals are what is measured) and
    calls a gRPC server's call log shows ending in anything but OK."""
    offset = server.log_path.stat().st_size
    server_mem = PeakMemory(server.proc.pid)
    envoy_mem = PeakMemory(envoy.proc.pid) if envoy else None
    logs = [workdir / f"{label}-{i}.tsv" for i in range(len(loads))]
    warmup = rotation.warmup if rotation else loads[0].warmup
    cpu = CpuMeter([server.proc.pid], skip_s=warmup)
    with server_mem.sampling(), cpu.metering(), \
            envoy_mem.sampling() if envoy_mem else contextlib.nullcontext():
        result = rotation.run(workdir, label) if rotation else h2load.run_many(loads, logs)
    errors = result.failed + (result.non_2xx if refusals_are_errors else 0)
    if isinstance(server, GrpcServer):
        errors += _failed_calls(server, offset, rpc)
    _LOGGER.info("%-28s %8.0f req/s  p50 %s ms  errors %d", label, result.rps,
                 result.p50_ms, errors)
    return Measured(result, server_mem.peak, envoy_mem.peak if envoy_mem else None, errors,
                    cpu.cores)


@contextlib.contextmanager
def running(*starters) -> Iterator[list[LoggedProcess]]:
    """Start each in turn (each may use the ones before) and stop all, last first."""
    started: list[LoggedProcess] = []
    try:
        for start in starters:
            started.append(start(*started))
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def _median(rounds: list[Measured]) -> Measured:
    """The round whose req/s is the median (the lower middle of an even count)."""
    ranked = sorted(rounds, key=lambda m: m.result.rps)
    return ranked[(len(ranked) - 1) // 2]


def run_main(opts: Options, db: Path, count: int, results: Results) -> None:
    """Every RPC over gRPC and over HTTP/JSON through Envoy, real and bare (sync and aio,
    as many processes as the server runs), and GET/POST /sarah/state on the peer,
    interleaved RPC by RPC so that drift on a shared machine hits a figure and its
    ceiling alike; the HTTP door against the peer in `opts.rounds` alternating rounds."""
    calls = workload.calls(phone(0), phone(count + 1))
    responses_file = opts.workdir / "responses.json"
    peer_db = opts.workdir / "peer.db"
    peer_app.seed(str(peer_db), [workload.kapso_upsert(phone(i)) for i in range(count)])
    workers = opts.processes
    with running(lambda: real_server(db, opts.workdir, opts.server_args)) as (server,):
        responses = _capture(server, calls, count)
        responses_file.write_text(json.dumps(
            {rpc: base64.b64encode(data).decode() for rpc, data in responses.items()}))
        with running(
            lambda *_: bare_server(responses_file, opts.workdir, opts.bare_threads, workers),
            lambda *_: bare_server(responses_file, opts.workdir, opts.bare_threads, workers,
                                   aio=True, name="bare-aio"),
            lambda *_: PeerProcess(peer_db, opts.workdir, "peer-def", "def"),
            lambda *_: PeerProcess(peer_db, opts.workdir, "peer-async", "async"),
            lambda *_: envoy_in_front(server, "envoy", opts.workdir, opts.envoy_concurrency),
            lambda sync, *_: envoy_in_front(sync, "envoy-bare", opts.workdir,
                                            opts.envoy_concurrency),
            lambda _, aio, *__: envoy_in_front(aio, "envoy-bare-aio", opts.workdir,
                                               opts.envoy_concurrency),
        ) as (sync, aio, peer_def, peer_async, envoy, envoy_sync, envoy_aio):
            for front in (envoy, envoy_sync, envoy_aio):
                for rpc in opts.rpcs:
                    workload.check_http(front.port, calls[rpc])
            for rpc in PEER_RPCS:
                for a_peer in (peer_def, peer_async):
                    workload.check_http(a_peer.port, calls[rpc])
            grpc_stacks = (("sync", sync), ("aio", aio), ("real", server))
            http_stacks = (("sync", sync, envoy_sync), ("aio", aio, envoy_aio),
                           ("real", server, envoy), ("peer-def", peer_def, None),
                           ("peer-async", peer_async, None))
            for rpc in opts.rpcs:
                for stack, upstream in grpc_stacks:
                    label = f"{rpc}-grpc-{stack}"
                    loads = workload.grpc_loads(calls[rpc], upstream.ports, opts.workdir,
                                                label, **opts.shape)
                    results.main[(rpc, "gRPC", stack)] = measure(
                        loads, upstream, None, rpc, opts.workdir, label)
                _http_rounds(opts, rpc, calls[rpc], http_stacks, results)
            if "UpsertState" in opts.rpcs and opts.rotate_leads > 0:
                _rotated(opts, grpc_stacks, results)


def _http_rounds(opts: Options, rpc: str, call: workload.Call, stacks, results: Results
                 ) -> None:
    """One RPC over HTTP/JSON on each stack in turn, in alternating rounds where the peer
    serves it (the median round is the figure), once elsewhere."""
    with_peer = rpc in PEER_RPCS
    rounds: dict[str, list[Measured]] = {}
    for i in range(opts.rounds if with_peer else 1):
        for stack, upstream, front in stacks:
            if stack in PEER_STACKS and not with_peer:
                continue
            label = f"{rpc}-http-{stack}-{i}"
            port = front.port if front is not None else upstream.port
            load = workload.http_load(call, port, opts.workdir, label, **opts.shape)
            rounds.setdefault(stack, []).append(
                measure([load], upstream, front, rpc, opts.workdir, label))
    for stack, measured in rounds.items():
        results.main[(rpc, "HTTP/JSON", stack)] = _median(measured)
        results.rounds[(rpc, "HTTP/JSON", stack)] = [m.result.rps for m in measured]


def _rotated(opts: Options, stacks, results: Results) -> None:
    """UpsertState over `opts.rotate_leads` distinct leads in turn, on the real server and
    the bare ones, with bench/rotate.py (h2load sends one body)."""
    bodies = [workload.calls(phone(i), phone(i))["UpsertState"].request.SerializeToString()
              for i in range(opts.rotate_leads)]
    for stack, upstream in stacks:
        rotation = rotate.Rotation(upstream.ports, f"/{workload.SERVICE}/UpsertState", bodies,
                                   opts.concurrency, opts.h2_connections, opts.duration,
                                   opts.warmup)
        label = f"rotated-{stack}"
        results.rotated[("UpsertState", "gRPC", stack)] = measure(
            [], upstream, None, "UpsertState", opts.workdir, label, rotation=rotation)


def _capture(server: GrpcServer, calls: dict[str, workload.Call], count: int
             ) -> dict[str, bytes]:
    """The real server's answer to each call, for the bare servicer to repeat; the write
    goes first so that GetState's answer is the lead as the bench leaves it."""
    order = ("UpsertState", *(rpc for rpc in workload.RPCS if rpc != "UpsertState"))
    with grpc.insecure_channel(server.target) as channel:
        responses = {rpc: workload.invoke(channel, calls[rpc]) for rpc in order}
    total = pb.GetStatsResponse.FromString(responses["GetStats"]).total
    if total != count:
        raise RuntimeError(f"GetStats counts {total} leads where bench/seed.py wrote {count}: "
                           "the server keeps derived data the seeder does not fill")
    return responses


def run_scale(opts: Options, dbs: dict[int, Path], results: Results) -> None:
    """GetStats, ListLeads' first page, GetActivity and ListEvents (scale_history.py) on
    each database, and a deep ListLeads page on the largest, one request at a time:
    latency without queueing."""
    shape = {"concurrency": 1, "duration": opts.duration, "warmup": opts.warmup}
    largest = max(dbs)
    results.deep_page = min(opts.deep_page, math.ceil(largest / PAGE_SIZE))
    for count, db in sorted(dbs.items()):
        with running(lambda db=db, count=count: real_server(
                db, opts.workdir, opts.server_args, name=f"server-{count}")) as (server,):
            calls = {"GetStats": workload.calls(phone(0), phone(count + 1))["GetStats"],
                     "ListLeads page 1": workload.list_page(""), **scale_history.calls(count)}
            with grpc.insecure_channel(server.target) as channel:
                scale_history.check(channel, count)
            if count == largest and results.deep_page > 1:
                with grpc.insecure_channel(server.target) as channel:
                    token = workload.page_token(channel, results.deep_page, PAGE_SIZE)
                calls[f"ListLeads page {results.deep_page}"] = workload.list_page(token)
            for name, call in calls.items():
                label = f"scale-{name.replace(' ', '-')}-{count}"
                loads = workload.grpc_loads(call, server.ports, opts.workdir, label, **shape)
                results.scale[(name, count)] = measure(
                    loads, server, None, call.rpc, opts.workdir, label)
