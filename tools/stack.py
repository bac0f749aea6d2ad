"""`make run`: the gRPC server and Envoy together in the foreground.

    python -m tools.stack [SERVER FLAGS...]

Envoy reads envoy.yaml (or $SARAH_ENVOY_CONFIG) from the repository root. Ctrl-C (SIGINT),
SIGTERM or closing the terminal (SIGHUP) stops both cleanly, Envoy first; if this process
is killed, both get SIGTERM. If either dies (a port already taken, say), the other is
stopped and the exit status is non-zero.
"""

import os
import re
import sys
from pathlib import Path

from deploy import ROOT
from deploy.envoy_config import envoy_command
from server.supervise import supervise


def envoy_addresses(config: Path) -> str:
    """Where the config makes Envoy listen: its admin and listener socket addresses."""
    found = re.findall(r"address: ([\d.]+)[^\n]*\s+port_value: (\d+)", config.read_text())
    named = zip(("admin", "HTTP/JSON and gRPC"), found, strict=False)
    return ", ".join(f"{what} on {host}:{port}" for what, (host, port) in named)


def main(argv: list[str] | None = None) -> int:
    server_args = sys.argv[1:] if argv is None else argv
    config = Path(os.environ.get("SARAH_ENVOY_CONFIG", ROOT / "envoy.yaml"))
    commands = {
        "server": [sys.executable, "-m", "server", *server_args],
        "envoy": envoy_command(config),
    }
    banner = (f"Envoy: {envoy_addresses(config)} (the server logs its own address below). "
              "Ctrl-C stops both.")
    return supervise(commands, banner, ROOT)


if __name__ == "__main__":
    sys.exit(main())
