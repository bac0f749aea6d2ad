"""Worker processes (issue 14): GetState and UpsertState over gRPC and through Envoy with
`--workers` 1, 2 and `auto`, each on a server of its own over the same database."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bench import workload
from bench.procs import accepts, envoy_in_front, real_server, server_processes
from bench.run import Measured, Options, measure, running
from bench.seed import phone

_LOGGER = logging.getLogger(__name__)

CHOICES = ("1", "2", "auto")
RPCS = ("GetState", "UpsertState")


@dataclass
class Workers:
    choice: str  # what --workers was given
    processes: int = 0  # what the server ran (0: it refused the choice)
    figures: dict[tuple[str, str], Measured] = field(default_factory=dict)  # (rpc, path)


def run_workers(opts: Options, db: Path, choices: tuple[str, ...] = CHOICES) -> list[Workers]:
    calls = workload.calls(phone(0), phone(1))
    found = []
    for choice in choices:
        args = [*opts.server_args, "--workers", choice]
        row = Workers(choice)
        found.append(row)
        if not accepts(args):
            _LOGGER.warning("the server does not take --workers %s; row left empty", choice)
            continue
        row.processes = server_processes(args)
        name = f"workers-{choice}"
        with running(lambda args=args, name=name: real_server(db, opts.workdir, args, name=name),
                      lambda server, name=name: envoy_in_front(
                          server, f"envoy-{name}", opts.workdir, opts.envoy_concurrency)
                      ) as (server, envoy):
            for rpc in RPCS:
                label = f"{name}-{rpc}-grpc"
                loads = workload.grpc_loads(calls[rpc], server.ports, opts.workdir, label,
                                            **opts.shape)
                row.figures[(rpc, "gRPC")] = measure(loads, server, None, rpc, opts.workdir,
                                                     label)
                label = f"{name}-{rpc}-http"
                load = workload.http_load(calls[rpc], envoy.port, opts.workdir, label,
                                          **opts.shape)
                row.figures[(rpc, "HTTP/JSON")] = measure([load], server, envoy, rpc,
                                                          opts.workdir, label)
    return found
