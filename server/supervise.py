"""Runs several processes in the foreground as one: stop all on a signal or when one dies."""

import signal
import subprocess
import sys
import threading
from pathlib import Path

_STOP_TIMEOUT_S = 20


def supervise(commands: dict[str, list[str]], banner: str, cwd: Path) -> int:
    """Start `commands` (name -> argv); on SIGINT/SIGTERM stop them, in reverse order of
    start, and return 0; if one exits first, stop the rest and return 1."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    children: dict[str, subprocess.Popen] = {}
    for name, command in commands.items():
        # Own sessions: a terminal's Ctrl-C reaches only us, and we stop them in order.
        children[name] = subprocess.Popen(command, cwd=cwd, start_new_session=True)
    print(banner, flush=True)

    def watch(name: str) -> None:
        children[name].wait()
        stop.set()

    for name in children:
        threading.Thread(target=watch, args=(name,), daemon=True).start()
    stop.wait()
    died = [name for name, child in children.items() if child.poll() is not None]
    # The last started is the front (Envoy): it stops first, so nothing new reaches the
    # servers; then the servers all drain and finish their calls at once.
    *servers, front = children.values()
    _stop([front])
    _stop(servers)
    if died:
        codes = ", ".join(f"{n} exited with status {children[n].returncode}" for n in died)
        print(f"stopped because {codes}", file=sys.stderr, flush=True)
        return 1
    return 0


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM every process still running, then wait for each (killing laggards)."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
