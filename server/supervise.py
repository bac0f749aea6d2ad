"""Runs several processes in the foreground as one: stop all on a signal or when one dies.

The children end with the supervisor however it ends: SIGINT, SIGTERM and SIGHUP (the
terminal closed) stop them in order; if the supervisor itself is killed (SIGKILL, or a
crash), Linux sends each child SIGTERM (PR_SET_PDEATHSIG), so none lives on holding ports.
"""

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from server.signals import Signals

_STOP_TIMEOUT_S = 20
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Loaded before any fork: the child only calls it.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def supervise(commands: dict[str, list[str]], banner: str, cwd: Path,
              forward_hangup: bool = False) -> int:
    """Start `commands` (name -> argv); on SIGINT/SIGTERM stop them, in reverse order of
    start, and return 0; if one exits first, stop the rest and return 1. SIGHUP stops
    them too, unless `forward_hangup`: then each child gets it instead."""
    if threading.current_thread() is not threading.main_thread():
        # Linux sends the death signal when the thread that forked a child ends.
        raise RuntimeError("supervise() must run on the main thread")
    signals = Signals(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name, command in commands.items():
        # Own sessions: a terminal's Ctrl-C or hangup reaches only us, and we stop them
        # in order.
        children[name] = subprocess.Popen(command, cwd=cwd, start_new_session=True,
                                          preexec_fn=_die_with(os.getpid()))
    print(banner, flush=True)
    hangups = 0

    def stopping() -> bool:
        nonlocal hangups
        if forward_hangup and signals.count(signal.SIGHUP) != hangups:
            hangups = signals.count(signal.SIGHUP)
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGHUP)
        asked = (signals.count(signal.SIGINT) or signals.count(signal.SIGTERM)
                 or (not forward_hangup and signals.count(signal.SIGHUP)))
        return bool(asked) or any(child.poll() is not None for child in children.values())

    signals.wait_for(stopping)
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


def _die_with(supervisor: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when `supervisor` dies, even by SIGKILL."""

    def arrange() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The supervisor may have died between fork and prctl: then no signal would come.
        if os.getppid() != supervisor:
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
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
