"""The tables of the runs beside the main one: overload, each --workers choice, watchers,
the history's retention and the memory soak."""

from bench import cells
from bench.cells import FIGURES, ROUTES
from bench.overload import Overloaded
from bench.retention import RetentionResults
from bench.run import Results, peer
from bench.soak import GROWTH_TARGET, Soak
from bench.watch import AT_LEAST_WITH_WATCHERS, LATENCY_TARGET_MS, Watched, WatchResults
from bench.workers import Workers
from server.core.housekeeping import DEFAULT_BATCH


def overload_table(overload: list[Overloaded]) -> list[str]:
    """Through Envoy at FACTOR x the peak: what was sent, what succeeded, what was refused
    and how fast."""
    header = ["overload, through Envoy", "connections", "offered req/s", "sent req/s",
              "goodput req/s", "peak req/s", "goodput x peak", "refused", "failed",
              "p99 ms (all)", "refusal p50 ms", "refusal p99 ms"]
    rows = []
    for over in overload:
        r = over.measured.result
        rows.append([ROUTES[over.rpc], str(over.connections), cells.rps(over.offered_rps),
                     cells.rps(r.rps), cells.rps(r.ok_rps), cells.rps(over.peak.result.rps),
                     cells.fmt_ratio(over.goodput_of_peak), str(r.non_2xx), str(r.failed),
                     cells.ms(r.p99_ms), cells.ms(r.refused_p50_ms),
                     cells.ms(r.refused_p99_ms)])
    return cells.table(header, rows)


def workers_table(results: Results, workers: list[Workers]) -> list[str]:
    """GetState and UpsertState with each --workers choice; through Envoy also beside the
    main table's faster peer."""
    header = ["--workers", "processes", "RPC", "path", *FIGURES, "x 1 worker", "x peer"]
    first = next((w for w in workers if w.processes == 1), None)
    rows = []
    notes = []
    for w in workers:
        if not w.processes:
            notes.append(f"--workers {w.choice}: not accepted by this server")
            continue
        for (rpc, path), m in w.figures.items():
            one = first.figures.get((rpc, path)) if first else None
            faster = peer(results.main, rpc) if path == "HTTP/JSON" else None
            peer_rps = faster[1].result.rps if faster else None
            rows.append([w.choice, str(w.processes), rpc, path, *cells.figures(m),
                         cells.fmt_ratio(cells.ratio(m.result.rps,
                                                     one.result.rps if one else None)),
                         cells.fmt_ratio(cells.ratio(m.result.rps, peer_rps))])
    return cells.table(header, rows) + ([""] + notes if notes else [])


def watch_tables(watch: WatchResults) -> list[str]:
    """Commit-to-receipt latency beside its targets (x target: p99 over the target), and
    UpsertState's rate with the watchers open over its rate without."""
    header = ["watch latency, commit to receipt", "setup", "events", "p50 ms", "p99 ms",
              "target p99", "x target", "result"]
    rows = []
    for lat in watch.latency:
        target = LATENCY_TARGET_MS[lat.where]
        ratio = cells.ratio(lat.p99_ms, target)
        rows.append([lat.where, lat.setup, str(len(lat.samples_ms)), cells.ms(lat.p50_ms),
                     cells.ms(lat.p99_ms), f"<= {target:g} ms", cells.fmt_ratio(ratio),
                     cells.verdict(ratio, 1.0, False)])
    lines = cells.table(header, rows)
    cost = watch.cost
    if cost is None:
        return lines
    header = ["UpsertState over gRPC", "watchers", *FIGURES, "events read", "dropped",
              "server CPU-s", "watchers CPU-s"]
    n = str(cost.watchers)
    rows = [
        ["before", "0", *cells.figures(cost.alone[0]), "-", "-", "-", "-"],
        ["with, every workspace", n, *_watched(cost.watched)],
        ["with, another workspace", n, *_watched(cost.idle)],
        ["after", "0", *cells.figures(cost.alone[1]), "-", "-", "-", "-"],
    ]
    errors = sum(m.errors for m in (*cost.alone, cost.watched.measured, cost.idle.measured))
    checks = []
    for name, watched in (("", cost.watched), (", another workspace", cost.idle)):
        ratio = cells.ratio(watched.measured.result.rps, cost.alone_rps)
        result = (cells.verdict(ratio, AT_LEAST_WITH_WATCHERS, True) if not errors
                  else f"{errors} errors: figures invalid")
        # The target is the watchers that see the writes; the idle row is what holding
        # the streams alone costs, beside it.
        shown = f">= {AT_LEAST_WITH_WATCHERS:.2f}" if not name else "-"
        checks.append([f"req/s with {n} watchers{name} / mean without",
                       cells.fmt_ratio(ratio), shown, result if not name else "-"])
    return [*lines, "", *cells.table(header, rows), "",
            f"(CPU-s: used by the server and by the watchers' own process during the "
            f"{cost.watched.seconds:.1f} s of each run with watchers, warm-up included)", "",
            *cells.table(["watchers target", "ratio", "target", "result"], checks)]


def _watched(w: Watched) -> list[str]:
    return [*cells.figures(w.measured), str(w.events), str(w.dropped), f"{w.server_cpu:.1f}",
            f"{w.watchers_cpu:.1f}"]


def retention_table(retention: RetentionResults | None) -> list[str]:
    """UpsertState with the history's backlog kept and while housekeeping removes it."""
    if retention is None:
        return ["retention: skipped (--retention-backlog 0)"]
    header = ["UpsertState over gRPC, retention", "old events", *FIGURES[:4], "left at end"]
    rows = [[run.name, str(retention.backlog), *cells.figures(run.measured)[:4], str(run.left)]
            for run in retention.runs]
    kept, removing = (run.measured.result.p99_ms for run in retention.runs)
    ratio = cells.ratio(removing, kept)
    return [*cells.table(header, rows), "",
            f"p99 while removing / kept: {cells.fmt_ratio(ratio)} (batches of "
            f"{DEFAULT_BATCH} rows, each its own write transaction)"]


def soak_lines(soak: Soak | None) -> list[str]:
    if soak is None:
        return ["memory soak: skipped (--soak-minutes 0)"]
    rps = ", ".join(f"{rpc} {value:.0f} req/s" for rpc, value in soak.rps.items())
    return [
        f"memory soak: {soak.seconds / 60:.1f} min of GetState + UpsertState ({rps})",
        f"  server RSS: {cells.mib(soak.warm_rss)} MiB after {soak.warmup_seconds:.0f} s "
        f"warm-up, {cells.mib(soak.late_rss)} MiB in the last tenth, peak "
        f"{cells.mib(soak.peak_rss)} MiB; trend {soak.slope_mib_per_min:+.2f} MiB/min after "
        "warm-up",
        f"  growth {soak.growth:+.1%}, target <= {GROWTH_TARGET:.0%}: "
        f"{cells.verdict(soak.growth, GROWTH_TARGET, False)}",
    ]
