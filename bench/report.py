"""The bench's tables: every figure beside its ceiling, as a ratio, against the targets."""

import os
import platform
import subprocess
from pathlib import Path

from bench import scale_history
from bench.overload import (
    AT_LEAST_GOODPUT_OF_PEAK,
    AT_MOST_REFUSAL_OF_TIMEOUT,
    FACTOR,
    Overloaded,
    route_timeout_s,
)
from bench.retention import RetentionResults
from bench.run import BARE_NAMES, PEER_RPCS, Key, Measured, Options, Results, ceiling
from bench.soak import GROWTH_TARGET, Soak
from bench.watch import AT_LEAST_WITH_WATCHERS, LATENCY_TARGET_MS, Watched, WatchResults
from bench.workers import Workers
from deploy import ROOT
from server.core.housekeeping import DEFAULT_BATCH

# Targets of issues 7 and 14, as ratios measured in the same run at the same concurrency.
# Over gRPC, of the ceiling (the faster bare servicer, as many processes as the server).
AT_LEAST_OF_CEILING = {"GetState": 0.8, "UpsertState": 0.7, "ListLeads": 0.5, "GetStats": 0.8}
# Through Envoy: GET and POST /sarah/state of Envoy in front of the bare servicers, and
# of the FastAPI peer; the other routes keep issue 7's ratio to the same RPC over gRPC.
AT_LEAST_HTTP_OF_CEILING = {"GetState": 0.85, "UpsertState": 0.85}
AT_LEAST_OF_PEER = {"GetState": 1.5, "UpsertState": 0.75}
AT_LEAST_ENVOY_OF_GRPC = 0.8
AT_MOST_P99_OF_P50 = 4.0  # GetState and UpsertState over gRPC at the main concurrency
AT_MOST_LARGE_OF_SMALL = 2.0
# "Page 1,000 as fast as page 1": equal within what two runs of one page differ by here.
AT_MOST_DEEP_OF_FIRST = 1.2
ROUTES = {"GetState": "GET /sarah/state", "UpsertState": "POST /sarah/state"}
_MIB = 2**20


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / _MIB:.0f}"


def verdict(ratio: float | None, target: float, at_least: bool) -> str:
    if ratio is None:
        return "n/a"
    gap = target - ratio if at_least else ratio - target
    if gap <= 0:
        return "pass"
    word = "short" if at_least else "over"
    return f"{word} by {gap:.2f}" if gap >= 0.01 else f"{word} by <0.01"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def _figures(m: Measured) -> list[str]:
    r = m.result
    return [f"{r.rps:.0f}", _ms(r.p50_ms), _ms(r.p99_ms), str(m.errors),
            _mib(m.server_peak), _mib(m.envoy_peak)]


def _result(m: Measured, ratio: float | None, target: float, at_least: bool = True) -> str:
    return f"{m.errors} errors: figures invalid" if m.errors else verdict(ratio, target,
                                                                          at_least)


def _rotated_name(opts: Options) -> str:
    return f"UpsertState, {opts.rotate_leads} leads"


def main_table(opts: Options, results: Results) -> list[str]:
    """Each RPC over gRPC and through Envoy beside its ceiling: the faster of the bare
    servicers over the same path (through Envoy: Envoy in front of them)."""
    header = ["RPC", "path", "req/s", "p50 ms", "p99 ms", "errors", "server MiB",
              "Envoy MiB", "ceiling", "ceiling req/s", "x ceiling", "x gRPC", "target",
              "result"]
    rows = []
    keyed: list[tuple[str, str, dict[Key, Measured], str]] = [
        (rpc, path, results.main, rpc) for rpc in opts.rpcs for path in ("gRPC", "HTTP/JSON")]
    if results.rotated:
        keyed.append(("UpsertState", "gRPC", results.rotated, _rotated_name(opts)))
    for rpc, path, table, name in keyed:
        real = table[(rpc, path, "real")]
        stack, bare = ceiling(table, rpc, path)
        of_ceiling = _ratio(real.result.rps, bare.result.rps)
        of_grpc = None
        target: float | None
        if path == "gRPC":
            target = AT_LEAST_OF_CEILING.get(rpc)
            shown, ratio = f">= {target:.2f} x ceiling" if target else "-", of_ceiling
        else:
            of_grpc = _ratio(real.result.rps, results.main[(rpc, "gRPC", "real")].result.rps)
            target = AT_LEAST_HTTP_OF_CEILING.get(rpc)
            shown, ratio = f">= {target:.2f} x ceiling" if target else "-", of_ceiling
            if target is None:
                target, ratio = AT_LEAST_ENVOY_OF_GRPC, of_grpc
                shown = f">= {AT_LEAST_ENVOY_OF_GRPC:.2f} x gRPC"
        result = _result(real, ratio, target) if target else "-"
        rows.append([name, path, *_figures(real), BARE_NAMES[stack], f"{bare.result.rps:.0f}",
                     _fmt_ratio(of_ceiling), _fmt_ratio(of_grpc), shown, result])
    return _table(header, rows)


def ceiling_table(opts: Options, results: Results) -> list[str]:
    """The ceilings, each shape of bare servicer; "x bare gRPC" is what Envoy leaves of the
    same servicer's rate over gRPC, the best "x gRPC" a server at its own ceiling could
    show through Envoy on this machine."""
    header = ["ceiling", "processes", "RPC", "req/s", "p50 ms", "p99 ms", "errors",
              "server MiB", "Envoy MiB", "x bare gRPC"]
    rows = []
    n = str(opts.processes)
    for path in ("gRPC", "HTTP/JSON"):
        for stack, name in BARE_NAMES.items():
            for rpc in opts.rpcs:
                bare = results.main[(rpc, path, stack)]
                of_bare = None if path == "gRPC" else _ratio(
                    bare.result.rps, results.main[(rpc, "gRPC", stack)].result.rps)
                rows.append([name if path == "gRPC" else f"Envoy + {name}", n, rpc,
                             *_figures(bare), _fmt_ratio(of_bare)])
    for stack, name in BARE_NAMES.items():
        key = ("UpsertState", "gRPC", stack)
        if key in results.rotated:
            rows.append([name, n, _rotated_name(opts), *_figures(results.rotated[key]), "-"])
    return _table(header, rows)


def door_table(opts: Options, results: Results) -> list[str]:
    """GET and POST /sarah/state on every stack over HTTP/1.1, median of the rounds."""
    header = ["HTTP door", "stack", "req/s (median)", "rounds req/s", "p50 ms", "p99 ms",
              "errors", "server MiB", "Envoy MiB"]
    names = {"real": "SarahService through Envoy", "peer": "FastAPI + uvicorn peer",
             **{stack: f"Envoy + {name}" for stack, name in BARE_NAMES.items()}}
    rows = []
    for rpc in (r for r in PEER_RPCS if r in opts.rpcs):
        for stack, name in names.items():
            key = (rpc, "HTTP/JSON", stack)
            rounds = " ".join(f"{rps:.0f}" for rps in results.rounds.get(key, []))
            rows.append([ROUTES[rpc], name, *_figures(results.main[key])[:1], rounds,
                         *_figures(results.main[key])[1:]])
    return _table(header, rows)


def targets_table(opts: Options, results: Results, overload: list[Overloaded]) -> list[str]:
    """Every target of issue 14: the figure, what it is set against, the ratio, the verdict."""
    header = ["target (issue 14)", "req/s", "against", "its req/s", "ratio", "target",
              "result"]
    rows = []
    main = results.main

    def against(name: str, real: Measured, other_name: str, other: Measured, target: float,
                at_least: bool = True) -> None:
        ratio = _ratio(real.result.rps, other.result.rps)
        sign = ">=" if at_least else "<="
        rows.append([name, f"{real.result.rps:.0f}", other_name, f"{other.result.rps:.0f}",
                     _fmt_ratio(ratio), f"{sign} {target:.2f}",
                     _result(real if real.errors else other, ratio, target, at_least)])

    for rpc in (r for r in PEER_RPCS if r in opts.rpcs):
        real = main[(rpc, "HTTP/JSON", "real")]
        stack, bare = ceiling(main, rpc, "HTTP/JSON")
        against(f"{ROUTES[rpc]} through Envoy / its ceiling", real,
                f"Envoy + {BARE_NAMES[stack]}", bare, AT_LEAST_HTTP_OF_CEILING[rpc])
        against(f"{ROUTES[rpc]} through Envoy / the peer", real, "FastAPI peer",
                main[(rpc, "HTTP/JSON", "peer")], AT_LEAST_OF_PEER[rpc])
    grpc_rows: list[tuple[str, dict[Key, Measured], str]] = [
        (rpc, main, rpc) for rpc in opts.rpcs if rpc in AT_LEAST_OF_CEILING]
    if results.rotated:
        grpc_rows.insert(2, ("UpsertState", results.rotated, _rotated_name(opts)))
    for rpc, table, name in grpc_rows:
        stack, bare = ceiling(table, rpc, "gRPC")
        against(f"{name} over gRPC / its ceiling", table[(rpc, "gRPC", "real")],
                BARE_NAMES[stack], bare, AT_LEAST_OF_CEILING[rpc])
    for rpc in (r for r in PEER_RPCS if r in opts.rpcs):
        real = main[(rpc, "gRPC", "real")]
        ratio = _ratio(real.result.p99_ms, real.result.p50_ms)
        rows.append([f"{rpc} over gRPC: p99 / p50 at {opts.concurrency} in flight",
                     f"{real.result.rps:.0f}", f"p99 {_ms(real.result.p99_ms)} ms",
                     f"p50 {_ms(real.result.p50_ms)} ms", _fmt_ratio(ratio),
                     f"<= {AT_MOST_P99_OF_P50:.2f}", _result(real, ratio, AT_MOST_P99_OF_P50,
                                                             False)])
    timeout = route_timeout_s()
    for over in overload:
        r = over.measured.result
        rows.append([f"{ROUTES[over.rpc]} at {FACTOR}x its peak: goodput / peak",
                     _rps(r.ok_rps), "peak", f"{over.peak.result.rps:.0f}",
                     _fmt_ratio(over.goodput_of_peak), f">= {AT_LEAST_GOODPUT_OF_PEAK:.2f}",
                     verdict(over.goodput_of_peak, AT_LEAST_GOODPUT_OF_PEAK, True)])
        refusal = _ratio(r.refused_p99_ms, timeout * 1000)
        sent = _ratio(r.rps, over.offered_rps)
        rows.append([f"{ROUTES[over.rpc]} at {FACTOR}x: refusal p99 / route timeout",
                     f"{r.non_2xx} refused", f"p99 {_ms(r.refused_p99_ms)} ms",
                     f"{timeout:g} s", _fmt_ratio(refusal),
                     f"<= {AT_MOST_REFUSAL_OF_TIMEOUT:.2f}",
                     verdict(refusal, AT_MOST_REFUSAL_OF_TIMEOUT, False) if r.non_2xx
                     # Nothing refused: the stack queued the excess, and the rate it was
                     # sent shows how far that held the generator back.
                     else f"none refused; queued, sent {_fmt_ratio(sent)} of offered"])
    return _table(header, rows)


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def overload_table(overload: list[Overloaded]) -> list[str]:
    """Through Envoy at FACTOR x the peak: what was sent, what succeeded, what was refused
    and how fast."""
    header = ["overload, through Envoy", "connections", "offered req/s", "sent req/s",
              "goodput req/s", "peak req/s", "goodput x peak", "refused", "failed",
              "p99 ms (all)", "refusal p50 ms", "refusal p99 ms"]
    rows = []
    for over in overload:
        r = over.measured.result
        rows.append([ROUTES[over.rpc], str(over.connections), f"{over.offered_rps:.0f}",
                     f"{r.rps:.0f}", _rps(r.ok_rps), f"{over.peak.result.rps:.0f}",
                     _fmt_ratio(over.goodput_of_peak), str(r.non_2xx), str(r.failed),
                     _ms(r.p99_ms), _ms(r.refused_p50_ms), _ms(r.refused_p99_ms)])
    return _table(header, rows)


def workers_table(results: Results, workers: list[Workers]) -> list[str]:
    """GetState and UpsertState with each --workers choice; through Envoy also beside the
    main table's peer."""
    header = ["--workers", "processes", "RPC", "path", "req/s", "p50 ms", "p99 ms", "errors",
              "server MiB", "Envoy MiB", "x 1 worker", "x peer"]
    first = next((w for w in workers if w.processes == 1), None)
    rows = []
    notes = []
    for w in workers:
        if not w.processes:
            notes.append(f"--workers {w.choice}: not accepted by this server")
            continue
        for (rpc, path), m in w.figures.items():
            one = first.figures.get((rpc, path)) if first else None
            peer = results.main.get((rpc, path, "peer"))
            rows.append([w.choice, str(w.processes), rpc, path, *_figures(m),
                         _fmt_ratio(_ratio(m.result.rps, one.result.rps if one else None)),
                         _fmt_ratio(_ratio(m.result.rps, peer.result.rps if peer else None))])
    return _table(header, rows) + ([""] + notes if notes else [])


def scale_table(opts: Options, results: Results) -> list[str]:
    small, large = min(opts.leads), max(opts.leads)
    header = ["one request at a time, gRPC", "leads", "req/s", "p50 ms", "p99 ms", "errors",
              "server MiB", "Envoy MiB"]
    rows = [[name, str(count), *_figures(m)] for (name, count), m in results.scale.items()]
    lines = _table(header, rows) + [""]
    p50 = {key: m.result.p50_ms for key, m in results.scale.items()}
    checks = []
    if large != small:
        for name in ("GetStats", "ListLeads page 1", *scale_history.NAMES):
            ratio = _ratio(p50.get((name, large)), p50.get((name, small)))
            checks.append([f"{name}: p50 on {large} / on {small} leads", _fmt_ratio(ratio),
                           f"<= {AT_MOST_LARGE_OF_SMALL:.2f}",
                           verdict(ratio, AT_MOST_LARGE_OF_SMALL, False)])
    deep = f"ListLeads page {results.deep_page}"
    if (deep, large) in p50:
        ratio = _ratio(p50[(deep, large)], p50.get(("ListLeads page 1", large)))
        checks.append([f"{deep} / page 1 p50, {large} leads", _fmt_ratio(ratio),
                       f"<= {AT_MOST_DEEP_OF_FIRST:.2f}",
                       verdict(ratio, AT_MOST_DEEP_OF_FIRST, False)])
    return lines + _table(["scale target", "ratio", "target", "result"], checks)


def watch_tables(watch: WatchResults) -> list[str]:
    """Commit-to-receipt latency beside its targets (x target: p99 over the target), and
    UpsertState's rate with the watchers open over its rate without."""
    header = ["watch latency, commit to receipt", "setup", "events", "p50 ms", "p99 ms",
              "target p99", "x target", "result"]
    rows = []
    for lat in watch.latency:
        target = LATENCY_TARGET_MS[lat.where]
        ratio = _ratio(lat.p99_ms, target)
        rows.append([lat.where, lat.setup, str(len(lat.samples_ms)), _ms(lat.p50_ms),
                     _ms(lat.p99_ms), f"<= {target:g} ms", _fmt_ratio(ratio),
                     verdict(ratio, 1.0, False)])
    lines = _table(header, rows)
    cost = watch.cost
    if cost is None:
        return lines
    header = ["UpsertState over gRPC", "watchers", "req/s", "p50 ms", "p99 ms", "errors",
              "server MiB", "Envoy MiB", "events read", "dropped", "server CPU-s",
              "watchers CPU-s"]
    n = str(cost.watchers)
    rows = [
        ["before", "0", *_figures(cost.alone[0]), "-", "-", "-", "-"],
        ["with, every workspace", n, *_watched(cost.watched)],
        ["with, another workspace", n, *_watched(cost.idle)],
        ["after", "0", *_figures(cost.alone[1]), "-", "-", "-", "-"],
    ]
    errors = sum(m.errors for m in (*cost.alone, cost.watched.measured, cost.idle.measured))
    checks = []
    for name, watched in (("", cost.watched), (", another workspace", cost.idle)):
        ratio = _ratio(watched.measured.result.rps, cost.alone_rps)
        result = (verdict(ratio, AT_LEAST_WITH_WATCHERS, True) if not errors
                  else f"{errors} errors: figures invalid")
        # The target is the watchers that see the writes; the idle row is what holding
        # the streams alone costs, beside it.
        target = f">= {AT_LEAST_WITH_WATCHERS:.2f}" if not name else "-"
        checks.append([f"req/s with {n} watchers{name} / mean without", _fmt_ratio(ratio),
                       target, result if not name else "-"])
    return [*lines, "", *_table(header, rows), "",
            f"(CPU-s: used by the server and by the watchers' own process during the "
            f"{cost.watched.seconds:.1f} s of each run with watchers, warm-up included)", "",
            *_table(["watchers target", "ratio", "target", "result"], checks)]


def _watched(w: Watched) -> list[str]:
    return [*_figures(w.measured), str(w.events), str(w.dropped), f"{w.server_cpu:.1f}",
            f"{w.watchers_cpu:.1f}"]


def retention_table(retention: RetentionResults | None) -> list[str]:
    """UpsertState with the history's backlog kept and while housekeeping removes it."""
    if retention is None:
        return ["retention: skipped (--retention-backlog 0)"]
    header = ["UpsertState over gRPC, retention", "old events", "req/s", "p50 ms", "p99 ms",
              "errors", "left at end"]
    rows = [[run.name, str(retention.backlog), *_figures(run.measured)[:4], str(run.left)]
            for run in retention.runs]
    kept, removing = (run.measured.result.p99_ms for run in retention.runs)
    ratio = _ratio(removing, kept)
    return [*_table(header, rows), "",
            f"p99 while removing / kept: {_fmt_ratio(ratio)} (batches of "
            f"{DEFAULT_BATCH} rows, each its own write transaction)"]


def soak_lines(soak: Soak | None) -> list[str]:
    if soak is None:
        return ["memory soak: skipped (--soak-minutes 0)"]
    rps = ", ".join(f"{rpc} {value:.0f} req/s" for rpc, value in soak.rps.items())
    return [
        f"memory soak: {soak.seconds / 60:.1f} min of GetState + UpsertState ({rps})",
        f"  server RSS: {_mib(soak.warm_rss)} MiB after {soak.warmup_seconds:.0f} s warm-up, "
        f"{_mib(soak.late_rss)} MiB in the last tenth, peak {_mib(soak.peak_rss)} MiB; "
        f"trend {soak.slope_mib_per_min:+.2f} MiB/min after warm-up",
        f"  growth {soak.growth:+.1%}, target <= {GROWTH_TARGET:.0%}: "
        f"{verdict(soak.growth, GROWTH_TARGET, False)}",
    ]


def _git() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()
    changed = git("status", "--porcelain", "--", "server", "envoy.yaml")
    dirty = " (uncommitted changes in server/ or envoy.yaml)" if changed else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                  if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs ({model}), {mem_kib / 2**20:.1f} GiB RAM, {platform.platform()}"


def header(opts: Options, h2load_version: str) -> list[str]:
    return [
        f"machine: {machine()}",
        f"server: commit {_git()}, args {' '.join(opts.server_args) or '(defaults)'}, "
        f"{opts.processes} process(es); ceilings: as many bare processes, grpcio on "
        f"{opts.bare_threads} threads and grpc.aio; peer: FastAPI + uvicorn, one process; "
        f"Envoy --concurrency {opts.envoy_concurrency}",
        f"load: {h2load_version}, {opts.concurrency} requests in flight (gRPC: "
        f"{min(opts.h2_connections, opts.concurrency)} HTTP/2 connections; HTTP/JSON: "
        f"HTTP/1.1, one per connection), {opts.duration:g} s each after {opts.warmup:g} s "
        f"warm-up; HTTP door against the peer: median of {opts.rounds} alternating rounds; "
        f"main table on {min(opts.leads)} leads",
    ]
