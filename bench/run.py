"""One bench run: the real stack and its two ceilings side by side, RPC by RPC."""

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

from bench import h2load, scale_history, workload
from bench.memory import PeakMemory
from bench.procs import GrpcServer, bare_server, envoy_in_front, real_server
from bench.seed import phone
from sarah.v1 import sarah_pb2 as pb
from tests.support.envoy import EnvoyProcess
from tests.support.processes import LoggedProcess

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


@dataclass(frozen=True)
class Measured:
    result: h2load.Result
    server_peak: int
    envoy_peak: int | None
    errors: int


@dataclass
class Results:
    """Keyed (rpc, path, stack): path "gRPC" or "HTTP/JSON", stack "real" or "bare"."""

    main: dict[tuple[str, str, str], Measured] = field(default_factory=dict)
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


def measure(loads: list[h2load.Load], server: GrpcServer, envoy: EnvoyProcess | None, rpc: str,
            workdir: Path, label: str) -> Measured:
    offset = server.log_path.stat().st_size
    server_mem = PeakMemory(server.proc.pid)
    envoy_mem = PeakMemory(envoy.proc.pid) if envoy else None
    logs = [workdir / f"{label}-{i}.tsv" for i in range(len(loads))]
    with server_mem.sampling(), envoy_mem.sampling() if envoy_mem else contextlib.nullcontext():
        result = h2load.run_many(loads, logs)
    errors = result.failed + result.non_2xx + _failed_calls(server, offset, rpc)
    _LOGGER.info("%-28s %8.0f req/s  p50 %s ms  errors %d", label, result.rps,
                 result.p50_ms, errors)
    return Measured(result, server_mem.peak, envoy_mem.peak if envoy_mem else None, errors)


@contextlib.contextmanager
def _running(*starters) -> Iterator[list[LoggedProcess]]:
    """Start each in turn (each may use the ones before) and stop all, last first."""
    started: list[LoggedProcess] = []
    try:
        for start in starters:
            started.append(start(*started))
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def run_main(opts: Options, db: Path, count: int, results: Results) -> None:
    """Every RPC over gRPC and over HTTP/JSON through Envoy, real and bare, interleaved
    RPC by RPC so that drift on a shared machine hits a figure and its ceiling alike."""
    shape = {"concurrency": opts.concurrency, "h2_connections": opts.h2_connections,
             "duration": opts.duration, "warmup": opts.warmup}
    calls = workload.calls(phone(0), phone(count + 1))
    responses_file = opts.workdir / "responses.json"
    with _running(lambda: real_server(db, opts.workdir, opts.server_args)) as (server,):
        responses = _capture(server, calls, count)
        responses_file.write_text(json.dumps(
            {rpc: base64.b64encode(data).decode() for rpc, data in responses.items()}))
        with _running(
            lambda *_: bare_server(responses_file, opts.workdir, opts.bare_threads),
            lambda *_: envoy_in_front(server, "envoy", opts.workdir, opts.envoy_concurrency),
            lambda bare, _: envoy_in_front(bare, "envoy-bare", opts.workdir,
                                             opts.envoy_concurrency),
        ) as (bare, envoy, envoy_bare):
            for front in (envoy, envoy_bare):
                for rpc in opts.rpcs:
                    workload.check_http(front.port, calls[rpc])
            stacks = (("bare", bare, envoy_bare), ("real", server, envoy))
            for rpc in opts.rpcs:
                for stack, upstream, _ in stacks:
                    label = f"{rpc}-grpc-{stack}"
                    loads = workload.grpc_loads(calls[rpc], upstream.ports, opts.workdir,
                                                label, **shape)
                    results.main[(rpc, "gRPC", stack)] = measure(
                        loads, upstream, None, rpc, opts.workdir, label)
                for stack, upstream, front in stacks:
                    label = f"{rpc}-http-{stack}"
                    load = workload.http_load(calls[rpc], front.port, opts.workdir, label,
                                              **shape)
                    results.main[(rpc, "HTTP/JSON", stack)] = measure(
                        [load], upstream, front, rpc, opts.workdir, label)


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
        with _running(lambda db=db, count=count: real_server(
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
