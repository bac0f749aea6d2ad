"""The tables of the bench's main run: every figure beside its ceiling, as a ratio, and the
scale table comparing the largest database with the smallest."""

from bench import cells, scale_history
from bench.cells import FIGURES, ROUTES
from bench.run import BARE_NAMES, PEER_NAMES, Key, Measured, Options, Results, ceiling
from bench.targets import (
    AT_LEAST_ENVOY_OF_GRPC,
    AT_LEAST_HTTP_OF_CEILING,
    AT_LEAST_OF_CEILING,
    AT_MOST_DEEP_OF_FIRST,
    AT_MOST_LARGE_OF_SMALL,
    rotated_name,
)


def main_table(opts: Options, results: Results) -> list[str]:
    """Each RPC over gRPC and through Envoy beside its ceiling: the faster of the bare
    servicers over the same path (through Envoy: Envoy in front of them)."""
    header = ["RPC", "path", *FIGURES, "ceiling", "ceiling req/s", "x ceiling", "x gRPC",
              "target", "result"]
    rows = []
    keyed: list[tuple[str, str, dict[Key, Measured], str]] = [
        (rpc, path, results.main, rpc) for rpc in opts.rpcs for path in ("gRPC", "HTTP/JSON")]
    if results.rotated:
        keyed.append(("UpsertState", "gRPC", results.rotated, rotated_name(opts)))
    for rpc, path, table, name in keyed:
        real = table[(rpc, path, "real")]
        stack, bare = ceiling(table, rpc, path)
        of_ceiling = cells.ratio(real.result.rps, bare.result.rps)
        of_grpc = None
        target: float | None
        if path == "gRPC":
            target = AT_LEAST_OF_CEILING.get(rpc)
            shown, ratio = f">= {target:.2f} x ceiling" if target else "-", of_ceiling
        else:
            of_grpc = cells.ratio(real.result.rps,
                                  results.main[(rpc, "gRPC", "real")].result.rps)
            target = AT_LEAST_HTTP_OF_CEILING.get(rpc)
            shown, ratio = f">= {target:.2f} x ceiling" if target else "-", of_ceiling
            if target is None:
                target, ratio = AT_LEAST_ENVOY_OF_GRPC, of_grpc
                shown = f">= {AT_LEAST_ENVOY_OF_GRPC:.2f} x gRPC"
        result = cells.result(real, ratio, target) if target else "-"
        rows.append([name, path, *cells.figures(real), BARE_NAMES[stack],
                     cells.rps(bare.result.rps), cells.fmt_ratio(of_ceiling),
                     cells.fmt_ratio(of_grpc), shown, result])
    return cells.table(header, rows)


def ceiling_table(opts: Options, results: Results) -> list[str]:
    """The ceilings, each shape of bare servicer; "x bare gRPC" is what Envoy leaves of the
    same servicer's rate over gRPC, the best "x gRPC" a server at its own ceiling could
    show through Envoy on this machine."""
    header = ["ceiling", "processes", "RPC", *FIGURES, "x bare gRPC"]
    rows = []
    n = str(opts.processes)
    for path in ("gRPC", "HTTP/JSON"):
        for stack, name in BARE_NAMES.items():
            for rpc in opts.rpcs:
                bare = results.main[(rpc, path, stack)]
                of_bare = None if path == "gRPC" else cells.ratio(
                    bare.result.rps, results.main[(rpc, "gRPC", stack)].result.rps)
                rows.append([name if path == "gRPC" else f"Envoy + {name}", n, rpc,
                             *cells.figures(bare), cells.fmt_ratio(of_bare)])
    for stack, name in BARE_NAMES.items():
        key = ("UpsertState", "gRPC", stack)
        if key in results.rotated:
            rows.append([name, n, rotated_name(opts), *cells.figures(results.rotated[key]),
                         "-"])
    return cells.table(header, rows)


def door_table(opts: Options, results: Results) -> list[str]:
    """GET and POST /sarah/state on every stack over HTTP/1.1, median of the rounds; both
    shapes of the peer (the faster is the one the targets count)."""
    header = ["HTTP door", "stack", "req/s (median)", "rounds req/s", *FIGURES[1:]]
    names = {"real": "SarahService through Envoy", **PEER_NAMES,
             **{stack: f"Envoy + {name}" for stack, name in BARE_NAMES.items()}}
    rows = []
    for rpc in opts.peer_rpcs:
        for stack, name in names.items():
            key = (rpc, "HTTP/JSON", stack)
            rounds = " ".join(f"{rps:.0f}" for rps in results.rounds.get(key, []))
            median, *rest = cells.figures(results.main[key])
            rows.append([ROUTES[rpc], name, median, rounds, *rest])
    return cells.table(header, rows)


def scale_table(opts: Options, results: Results) -> list[str]:
    small, large = min(opts.leads), max(opts.leads)
    header = ["one request at a time, gRPC", "leads", *FIGURES]
    rows = [[name, str(count), *cells.figures(m)] for (name, count), m in results.scale.items()]
    lines = cells.table(header, rows) + [""]
    p50 = {key: m.result.p50_ms for key, m in results.scale.items()}
    checks = []
    if large != small:
        for name in ("GetStats", "ListLeads page 1", *scale_history.NAMES):
            ratio = cells.ratio(p50.get((name, large)), p50.get((name, small)))
            checks.append([f"{name}: p50 on {large} / on {small} leads",
                           *cells.held_to(ratio, AT_MOST_LARGE_OF_SMALL, False)])
    deep = f"ListLeads page {results.deep_page}"
    if (deep, large) in p50:
        ratio = cells.ratio(p50[(deep, large)], p50.get(("ListLeads page 1", large)))
        checks.append([f"{deep} / page 1 p50, {large} leads",
                       *cells.held_to(ratio, AT_MOST_DEEP_OF_FIRST, False)])
    return lines + cells.table(["scale target", "ratio", "target", "result"], checks)
