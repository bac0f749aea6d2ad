"""`make run`: the gRPC server and Envoy together in the foreground.

    python -m server.stack [SERVER FLAGS...]

Envoy reads envoy.yaml (or $SARAH_ENVOY_CONFIG) from the repository root. Ctrl-C (SIGINT)
or SIGTERM stops both cleanly, Envoy first. If either dies, the other is stopped and the
exit status is non-zero.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_STOP_TIMEOUT_S = 20


def _envoy_binary() -> str:
    beside_python = Path(sys.executable).parent / "envoy"
    return str(beside_python) if beside_python.exists() else (shutil.which("envoy") or "envoy")


def _envoy_addresses(config: Path) -> str:
    """Where the config makes Envoy listen: its admin and listener socket addresses."""
    found = re.findall(r"address: ([\d.]+)[^\n]*\s+port_value: (\d+)", config.read_text())
    named = zip(("admin", "HTTP/JSON and gRPC"), found, strict=False)
    return ", ".join(f"{what} on {host}:{port}" for what, (host, port) in named)


def main(argv: list[str] | None = None) -> int:
    server_args = sys.argv[1:] if argv is None else argv
    config = Path(os.environ.get("SARAH_ENVOY_CONFIG", ROOT / "envoy.yaml"))
    commands = {
        "server": [sys.executable, "-m", "server", *server_args],
        "envoy": [_envoy_binary(), "-c", str(config), "--log-level", "warn",
                  "--disable-hot-restart", "--file-flush-interval-msec", "1000"],
    }
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    children: dict[str, subprocess.Popen] = {}
    for name, command in commands.items():
        # Own sessions: a terminal's Ctrl-C reaches only us, and we stop them in order.
        children[name] = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    print(f"Envoy: {_envoy_addresses(config)} (the server logs its own address below). "
          "Ctrl-C stops both.", flush=True)

    def watch(name: str) -> None:
        children[name].wait()
        stop.set()

    for name in children:
        threading.Thread(target=watch, args=(name,), daemon=True).start()
    stop.wait()
    died = [name for name, child in children.items() if child.poll() is not None]
    for name in ("envoy", "server"):  # the front first, so nothing new reaches the server
        child = children[name]
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if died:
        codes = ", ".join(f"{n} exited with status {children[n].returncode}" for n in died)
        print(f"SarahService stopped because {codes}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
