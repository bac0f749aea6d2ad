"""How the bench writes its figures: the cells of a row, a target's verdict, and the table
that lines the rows up."""

from bench.run import Measured

# The routes of the RPCs measured against the FastAPI peer, as the rows name them.
ROUTES = {"GetState": "GET /sarah/state", "UpsertState": "POST /sarah/state"}
# The columns `figures` fills, in its order.
FIGURES = ["req/s", "p50 ms", "p99 ms", "errors", "server MiB", "Envoy MiB"]
_MIB = 2**20


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / _MIB:.0f}"


def rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def verdict(value: float | None, target: float, at_least: bool) -> str:
    if value is None:
        return "n/a"
    gap = target - value if at_least else value - target
    if gap <= 0:
        return "pass"
    word = "short" if at_least else "over"
    return f"{word} by {gap:.2f}" if gap >= 0.01 else f"{word} by <0.01"


def result(m: Measured, value: float | None, target: float, at_least: bool = True) -> str:
    """The verdict, unless errors make the measurement's figures worthless."""
    return f"{m.errors} errors: figures invalid" if m.errors else verdict(value, target,
                                                                          at_least)


def held_to(value: float | None, target: float, at_least: bool,
            outcome: str | None = None) -> list[str]:
    """A ratio, the target it is held to and the outcome (by default the verdict)."""
    sign = ">=" if at_least else "<="
    return [fmt_ratio(value), f"{sign} {target:.2f}",
            verdict(value, target, at_least) if outcome is None else outcome]


def figures(m: Measured) -> list[str]:
    """A measurement's cells under FIGURES."""
    r = m.result
    return [rps(r.rps), ms(r.p50_ms), ms(r.p99_ms), str(m.errors), mib(m.server_peak),
            mib(m.envoy_peak)]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The header, a rule and the rows, each column as wide as its widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def sections(*parts: list[str]) -> list[str]:
    """The parts one after another, a blank line between; empty parts are left out."""
    lines: list[str] = []
    for part in (p for p in parts if p):
        lines += [""] * bool(lines) + part
    return lines
