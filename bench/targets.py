"""The bench's targets (issues 7 and 14) and the table holding every figure to its own."""

from bench import cells
from bench.cells import ROUTES
from bench.floor import POSTGRES, SQLITE, FloorResults
from bench.overload import (
    AT_LEAST_GOODPUT_OF_PEAK,
    AT_MOST_REFUSAL_OF_TIMEOUT,
    FACTOR,
    Overloaded,
    route_timeout_s,
)
from bench.run import BARE_NAMES, PEER_NAMES, Key, Measured, Options, Results, ceiling, peer

# Targets of issues 7 and 14, as ratios measured in the same run at the same concurrency.
# Over gRPC, of the ceiling (the faster bare servicer, as many processes as the server).
AT_LEAST_OF_CEILING = {"GetState": 0.8, "UpsertState": 0.7, "ListLeads": 0.5, "GetStats": 0.8}
# Through Envoy: GET and POST /sarah/state of Envoy in front of the bare servicers, and
# of the faster FastAPI peer; the other routes keep issue 7's ratio to the same RPC over gRPC.
AT_LEAST_HTTP_OF_CEILING = {"GetState": 0.85, "UpsertState": 0.85}
AT_LEAST_OF_PEER = {"GetState": 1.5, "UpsertState": 0.75}
AT_LEAST_ENVOY_OF_GRPC = 0.8
AT_MOST_P99_OF_P50 = 4.0  # GetState and UpsertState over gRPC at the main concurrency
AT_MOST_LARGE_OF_SMALL = 2.0
# "Page 1,000 as fast as page 1": equal within what two runs of one page differ by here.
AT_MOST_DEEP_OF_FIRST = 1.2


def rotated_name(opts: Options) -> str:
    return f"UpsertState, {opts.rotate_leads} leads"


def targets_table(opts: Options, results: Results, overload: list[Overloaded]) -> list[str]:
    """Every target of issue 14: the figure, what it is set against, the ratio, the verdict."""
    header = ["target (issue 14)", "req/s", "against", "its req/s", "ratio", "target",
              "result"]
    rows = []
    main = results.main

    def against(name: str, real: Measured, other_name: str, other: Measured, target: float,
                at_least: bool = True) -> None:
        ratio = cells.ratio(real.result.rps, other.result.rps)
        rows.append([name, cells.rps(real.result.rps), other_name, cells.rps(other.result.rps),
                     *cells.held_to(ratio, target, at_least, cells.result(
                         real if real.errors else other, ratio, target, at_least))])

    for rpc in opts.peer_rpcs:
        real = main[(rpc, "HTTP/JSON", "real")]
        stack, bare = ceiling(main, rpc, "HTTP/JSON")
        against(f"{ROUTES[rpc]} through Envoy / its ceiling", real,
                f"Envoy + {BARE_NAMES[stack]}", bare, AT_LEAST_HTTP_OF_CEILING[rpc])
        faster = peer(main, rpc)
        assert faster is not None
        against(f"{ROUTES[rpc]} through Envoy / the peer", real, PEER_NAMES[faster[0]],
                faster[1], AT_LEAST_OF_PEER[rpc])
    grpc_rows: list[tuple[str, dict[Key, Measured], str]] = [
        (rpc, main, rpc) for rpc in opts.rpcs if rpc in AT_LEAST_OF_CEILING]
    if results.rotated:
        grpc_rows.insert(2, ("UpsertState", results.rotated, rotated_name(opts)))
    for rpc, table, name in grpc_rows:
        stack, bare = ceiling(table, rpc, "gRPC")
        against(f"{name} over gRPC / its ceiling", table[(rpc, "gRPC", "real")],
                BARE_NAMES[stack], bare, AT_LEAST_OF_CEILING[rpc])
    for rpc in opts.peer_rpcs:
        real = main[(rpc, "gRPC", "real")]
        ratio = cells.ratio(real.result.p99_ms, real.result.p50_ms)
        rows.append([f"{rpc} over gRPC: p99 / p50 at {opts.concurrency} in flight",
                     cells.rps(real.result.rps), f"p99 {cells.ms(real.result.p99_ms)} ms",
                     f"p50 {cells.ms(real.result.p50_ms)} ms",
                     *cells.held_to(ratio, AT_MOST_P99_OF_P50, False, cells.result(
                         real, ratio, AT_MOST_P99_OF_P50, False))])
    timeout = route_timeout_s()
    for over in overload:
        r = over.measured.result
        rows.append([f"{ROUTES[over.rpc]} at {FACTOR}x its peak: goodput / peak",
                     cells.rps(r.ok_rps), "peak", cells.rps(over.peak.result.rps),
                     *cells.held_to(over.goodput_of_peak, AT_LEAST_GOODPUT_OF_PEAK, True)])
        refusal = cells.ratio(r.refused_p99_ms, timeout * 1000)
        sent = cells.ratio(r.rps, over.offered_rps)
        # Nothing refused: the stack queued the excess, and the rate it was sent shows how
        # far that held the generator back.
        queued = (None if r.non_2xx
                  else f"none refused; queued, sent {cells.fmt_ratio(sent)} of offered")
        rows.append([f"{ROUTES[over.rpc]} at {FACTOR}x: refusal p99 / route timeout",
                     f"{r.non_2xx} refused", f"p99 {cells.ms(r.refused_p99_ms)} ms",
                     f"{timeout:g} s",
                     *cells.held_to(refusal, AT_MOST_REFUSAL_OF_TIMEOUT, False, queued)])
    return cells.table(header, rows)


# Issue 25: the write path against its floor and the faster peer.
AT_MOST_CPU_OF_FLOOR = 3.0  # UpsertState's CPU per call over the raw driver's, same database
AT_MOST_CPU_MS = 0.5  # UpsertState's CPU per call on SQLite, every process of the server
AT_LEAST_OF_FASTER_PEER = {"GetState": 1.5, "UpsertState": 0.5}
AT_LEAST_UPSERT_OF_BARE = 0.5


def _reach(ceiling_value: float | None, target: float, at_least: bool) -> list[str]:
    """The same ratio on the ceiling (grpcio, protobuf and Envoy with none of the service's
    work), and whether the target is in reach of the chosen parts at all: a target the
    ceiling itself misses cannot be met by any write path on them."""
    if ceiling_value is None:
        return ["-", "-"]
    verdict = cells.verdict(ceiling_value, target, at_least)
    return [cells.fmt_ratio(ceiling_value),
            "yes" if verdict == "pass" else f"no: the ceiling alone is {verdict}"]


def issue25_table(opts: Options, results: Results, floor: FloorResults | None) -> list[str]:
    """Issue 25's targets: each figure, what it is set against, the ratio, the verdict, and
    beside it the same ratio on the ceiling (bare servicer, behind Envoy for the HTTP rows):
    what the chosen parts alone reach."""
    header = ["target (issue 25)", "figure", "against", "its figure", "ratio", "target",
              "result", "ceiling alone", "in reach"]
    rows: list[list[str]] = []
    main = results.main
    if floor is not None:
        bare, burdened = floor.bare_cpu_us(), floor.burned()
        for database in (SQLITE, POSTGRES):
            server, base = floor.server(database), floor.floor(database)
            if server is None or base is None:
                continue
            ratio = cells.ratio(server.cpu_us, base.cpu_us)
            rows.append([f"UpsertState CPU per call / the floor, {database}",
                         f"{server.cpu_us or 0:.0f} µs", "raw driver, one thread",
                         f"{base.cpu_us:.0f} µs",
                         *cells.held_to(ratio, AT_MOST_CPU_OF_FLOOR, False, cells.result(
                             server.measured, ratio, AT_MOST_CPU_OF_FLOOR, False)),
                         *_reach(cells.ratio(bare, base.cpu_us), AT_MOST_CPU_OF_FLOOR, False)])
            if database == SQLITE and burdened is not None:
                # grpcio's server doing exactly the write path's Python, none of its waits:
                # where the service's work alone lands on these parts.
                ratio = cells.ratio(burdened.cpu_us, base.cpu_us)
                rows.append([f"grpcio + the write path's own CPU / the floor, {database}",
                             f"{burdened.cpu_us or 0:.0f} µs", "raw driver, one thread",
                             f"{base.cpu_us:.0f} µs",
                             *cells.held_to(ratio, AT_MOST_CPU_OF_FLOOR, False, cells.result(
                                 burdened.measured, ratio, AT_MOST_CPU_OF_FLOOR, False)),
                             "-", "-"])
            if database == SQLITE and server.cpu_us is not None:
                ms = server.cpu_us / 1000
                rows.append([f"UpsertState CPU per call, {database}", f"{ms:.2f} ms", "-", "-",
                             *cells.held_to(ms, AT_MOST_CPU_MS, False, cells.result(
                                 server.measured, ms, AT_MOST_CPU_MS, False)),
                             *_reach(None if bare is None else bare / 1000, AT_MOST_CPU_MS,
                                     False)])
    for rpc in opts.peer_rpcs:
        faster = peer(main, rpc)
        assert faster is not None
        real = main[(rpc, "HTTP/JSON", "real")]
        ratio = cells.ratio(real.result.rps, faster[1].result.rps)
        target = AT_LEAST_OF_FASTER_PEER[rpc]
        _, envoy_bare = ceiling(main, rpc, "HTTP/JSON")
        rows.append([f"{ROUTES[rpc]} through Envoy / the faster peer",
                     f"{cells.rps(real.result.rps)} req/s", PEER_NAMES[faster[0]],
                     f"{cells.rps(faster[1].result.rps)} req/s",
                     *cells.held_to(ratio, target, True, cells.result(
                         real if real.errors else faster[1], ratio, target)),
                     *_reach(cells.ratio(envoy_bare.result.rps, faster[1].result.rps),
                             target, True)])
    if "UpsertState" in opts.rpcs:
        real = main[("UpsertState", "gRPC", "real")]
        stack, bare_grpc = ceiling(main, "UpsertState", "gRPC")
        ratio = cells.ratio(real.result.rps, bare_grpc.result.rps)
        rows.append(["UpsertState over gRPC / the bare servicer",
                     f"{cells.rps(real.result.rps)} req/s", BARE_NAMES[stack],
                     f"{cells.rps(bare_grpc.result.rps)} req/s",
                     *cells.held_to(ratio, AT_LEAST_UPSERT_OF_BARE, True, cells.result(
                         real if real.errors else bare_grpc, ratio, AT_LEAST_UPSERT_OF_BARE)),
                     "-", "-"])
    for rpc in opts.peer_rpcs:
        real = main[(rpc, "gRPC", "real")]
        ratio = cells.ratio(real.result.p99_ms, real.result.p50_ms)
        _, bare_grpc = ceiling(main, rpc, "gRPC")
        rows.append([f"{rpc} over gRPC: p99 / p50 at {opts.concurrency} in flight",
                     f"p99 {cells.ms(real.result.p99_ms)} ms", "p50",
                     f"{cells.ms(real.result.p50_ms)} ms",
                     *cells.held_to(ratio, AT_MOST_P99_OF_P50, False, cells.result(
                         real, ratio, AT_MOST_P99_OF_P50, False)),
                     *_reach(cells.ratio(bare_grpc.result.p99_ms, bare_grpc.result.p50_ms),
                             AT_MOST_P99_OF_P50, False)])
    return cells.table(header, rows) if rows else []
