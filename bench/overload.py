"""Overload (issue 14): GET and POST /sarah/state through Envoy at `factor` times the rate
the stack sustains, beside that peak: what still succeeds (goodput) and how quickly the
rest is refused."""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import workload
from bench.procs import envoy_in_front, real_server
from bench.run import Measured, Options, measure, running
from bench.seed import phone
from deploy.envoy_config import load

FACTOR = 4
AT_LEAST_GOODPUT_OF_PEAK = 0.90
# "Refused quickly": a refusal's p99 within this share of the route's timeout.
AT_MOST_REFUSAL_OF_TIMEOUT = 0.1
RPCS = ("GetState", "UpsertState")


def route_timeout_s(route: str = "grpc_writes") -> float:
    """envoy.yaml's timeout of the route every transcoded JSON call ends up on."""

    def find(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("name") == route and "route" in node:
                return node["route"]["timeout"]
            nodes = node.values()
        elif isinstance(node, list):
            nodes = node
        else:
            return None
        return next((found for n in nodes if (found := find(n)) is not None), None)

    timeout = find(load())
    if timeout is None:
        raise RuntimeError(f"envoy.yaml has no route {route} with a timeout")
    return float(str(timeout).removesuffix("s"))


@dataclass(frozen=True)
class Overloaded:
    rpc: str
    peak: Measured  # flat out at opts.concurrency connections
    offered_rps: float  # FACTOR x the peak, what h2load was asked to send
    connections: int
    measured: Measured

    @property
    def goodput_of_peak(self) -> float | None:
        ok = self.measured.result.ok_rps
        return ok / self.peak.result.rps if ok is not None and self.peak.result.rps else None


def run_overload(opts: Options, db: Path) -> list[Overloaded]:
    """For each route: the peak (the main table's load), then FACTOR x its rate offered by
    FACTOR x as many HTTP/1.1 connections, each held to its share with h2load --rps.
    A connection carries one request at a time, so the rate offered is reached only if the
    stack answers (or refuses) about as fast as at its peak; h2load's `req/s` says what
    was sent, goodput what succeeded."""
    calls = workload.calls(phone(0), phone(1))
    found = []
    with running(lambda: real_server(db, opts.workdir, opts.server_args, name="server-over"),
                  lambda server: envoy_in_front(server, "envoy-over", opts.workdir,
                                                opts.envoy_concurrency)) as (server, envoy):
        for rpc in RPCS:
            label = f"overload-{rpc}"
            peak = measure([workload.http_load(calls[rpc], envoy.port, opts.workdir,
                                               f"{label}-peak", **opts.shape)],
                           server, envoy, rpc, opts.workdir, f"{label}-peak")
            connections = FACTOR * opts.concurrency
            offered = FACTOR * peak.result.rps
            shape = {**opts.shape, "concurrency": connections,
                     "rps": max(1, math.ceil(offered / connections))}
            load = workload.http_load(calls[rpc], envoy.port, opts.workdir, label, **shape)
            over = measure([load], server, envoy, rpc, opts.workdir, label,
                           refusals_are_errors=False)
            found.append(Overloaded(rpc, peak, offered, connections, over))
    return found
