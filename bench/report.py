"""The bench's tables: every figure beside its ceiling, as a ratio, against the targets."""

import os
import platform
import subprocess
from pathlib import Path

from bench import scale_history
from bench.retention import RetentionResults
from bench.run import Measured, Options, Results
from bench.soak import GROWTH_TARGET, Soak
from bench.watch import AT_LEAST_WITH_WATCHERS, LATENCY_TARGET_MS, Watched, WatchResults
from deploy import ROOT
from server.core.housekeeping import DEFAULT_BATCH

# Targets of issue 7, as ratios measured in the same run at the same concurrency.
AT_LEAST_OF_BARE = {"GetState": 0.7, "UpsertState": 0.5}
AT_LEAST_ENVOY_OF_GRPC = 0.8
AT_MOST_LARGE_OF_SMALL = 2.0
# "Page 1,000 as fast as page 1": equal within what two runs of one page differ by here.
AT_MOST_DEEP_OF_FIRST = 1.2
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


def main_table(opts: Options, results: Results) -> list[str]:
    header = ["RPC", "path", "req/s", "p50 ms", "p99 ms", "errors", "server MiB",
              "Envoy MiB", "ceiling req/s", "x ceiling", "x gRPC", "target", "result"]
    rows = []
    for rpc in opts.rpcs:
        for path in ("gRPC", "HTTP/JSON"):
            real, bare = results.main[(rpc, path, "real")], results.main[(rpc, path, "bare")]
            of_ceiling = _ratio(real.result.rps, bare.result.rps)
            of_grpc = None
            if path == "gRPC":
                target = AT_LEAST_OF_BARE.get(rpc)
                shown, ratio = (f">= {target:.2f} x ceiling", of_ceiling) if target else ("", None)
            else:
                of_grpc = _ratio(real.result.rps, results.main[(rpc, "gRPC", "real")].result.rps)
                target, shown, ratio = (AT_LEAST_ENVOY_OF_GRPC,
                                        f">= {AT_LEAST_ENVOY_OF_GRPC:.2f} x gRPC", of_grpc)
            result = verdict(ratio, target, True) if target else "-"
            if real.errors:
                result = f"{real.errors} errors: figures invalid"
            rows.append([rpc, path, *_figures(real), f"{bare.result.rps:.0f}",
                         _fmt_ratio(of_ceiling), _fmt_ratio(of_grpc), shown or "-", result])
    return _table(header, rows)


def ceiling_table(opts: Options, results: Results) -> list[str]:
    """The ceilings; "x bare gRPC" is what Envoy leaves of the bare servicer's rate, the
    best "x gRPC" a server at its own ceiling could show through Envoy on this machine."""
    header = ["ceiling", "RPC", "req/s", "p50 ms", "p99 ms", "errors", "server MiB",
              "Envoy MiB", "x bare gRPC"]
    rows = []
    for path in ("gRPC", "HTTP/JSON"):
        for rpc in opts.rpcs:
            bare = results.main[(rpc, path, "bare")]
            of_bare = None if path == "gRPC" else _ratio(
                bare.result.rps, results.main[(rpc, "gRPC", "bare")].result.rps)
            rows.append(["bare grpcio" if path == "gRPC" else "Envoy + bare grpcio", rpc,
                         *_figures(bare), _fmt_ratio(of_bare)])
    return _table(header, rows)


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
        f"server: commit {_git()}, args {' '.join(opts.server_args) or '(defaults)'}; "
        f"bare grpcio servicer: {opts.bare_threads} threads; "
        f"Envoy --concurrency {opts.envoy_concurrency}",
        f"load: {h2load_version}, {opts.concurrency} requests in flight (gRPC: "
        f"{min(opts.h2_connections, opts.concurrency)} HTTP/2 connections; HTTP/JSON: "
        f"HTTP/1.1, one per connection), {opts.duration:g} s each after {opts.warmup:g} s "
        f"warm-up; main table on {min(opts.leads)} leads",
    ]
