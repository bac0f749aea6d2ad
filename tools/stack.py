"""`make run`: the gRPC server and Envoy together in the foreground.

    python -m tools.stack [--rate-limit CALLS/SECONDSs] [--burst N] [SERVER FLAGS...]

Envoy reads envoy.yaml (or $SARAH_ENVOY_CONFIG) from the repository root; --rate-limit and
--burst change its per-API-key rate limit, $SARAH_CORS_ORIGINS (comma-separated origins)
lets browser pages on those origins call it (CORS), and with several --workers its cluster
lists each worker's port (a derived copy in a temporary folder). Ctrl-C (SIGINT),
SIGTERM or closing the terminal (SIGHUP) stops both cleanly, Envoy first; if this process
is killed, both get SIGTERM. If either dies (a port already taken, say), the other is
stopped and the exit status is non-zero.
"""

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

from deploy import ROOT
from deploy.envoy_config import (
    configured_cors_origins,
    dump,
    envoy_command,
    load,
    rate_limit,
    with_cors_origins,
    with_rate_limit,
    with_replicas,
)
from server.config import parse_args
from server.supervise import supervise
from tools.edge_tls import parse_rate


def envoy_addresses(config: Path) -> str:
    """Where the config makes Envoy listen: its admin and listener socket addresses."""
    found = re.findall(r"address: ([\d.]+)[^\n]*\s+port_value: (\d+)", config.read_text())
    named = zip(("admin", "HTTP/JSON and gRPC"), found, strict=False)
    return ", ".join(f"{what} on {host}:{port}" for what, (host, port) in named)


def main(argv: list[str] | None = None) -> int:
    ours = argparse.ArgumentParser(prog="python -m tools.stack", add_help=False,
                                   allow_abbrev=False)
    ours.add_argument("--rate-limit", type=parse_rate)
    ours.add_argument("--burst", type=int)
    args, server_args = ours.parse_known_args(sys.argv[1:] if argv is None else argv)
    config = Path(os.environ.get("SARAH_ENVOY_CONFIG", ROOT / "envoy.yaml"))
    ports = _server_ports(server_args)
    try:
        origins = configured_cors_origins()
    except ValueError as bad:
        ours.exit(2, f"python -m tools.stack: {bad}\n")
    with tempfile.TemporaryDirectory(prefix="sarah-stack-") as scratch:
        if args.rate_limit or args.burst or len(ports) > 1 or origins:
            derived_config = with_cors_origins(load(config), origins)
            if args.rate_limit or args.burst:
                calls, seconds = args.rate_limit or rate_limit(derived_config)[:2]
                derived_config = with_rate_limit(derived_config, calls, seconds, args.burst)
            if len(ports) > 1:
                derived_config = with_replicas(derived_config, ports)
            derived = Path(scratch) / "envoy.yaml"
            derived.write_text(dump(derived_config))
            config = derived
        return _run(config, server_args)


def _server_ports(server_args: list[str]) -> list[int]:
    """The ports the server's worker processes listen on, as the server reads its flags
    and environment (--workers auto: one per CPU), each an endpoint of Envoy's cluster;
    empty for port 0, whose ports nobody knows in advance."""
    config = parse_args(server_args)
    port = int(config.listen.rpartition(":")[2])
    return [port + i for i in range(config.worker_count)] if port else []


def _run(config: Path, server_args: list[str]) -> int:
    commands = {
        "server": [sys.executable, "-m", "server", *server_args],
        "envoy": envoy_command(config),
    }
    banner = (f"Envoy: {envoy_addresses(config)} (the server logs its own address below). "
              "Ctrl-C stops both.")
    return supervise(commands, banner, ROOT)


if __name__ == "__main__":
    sys.exit(main())
