"""Child processes of the tests and the bench: any command with its output in a log file,
and `python -m server` as an operator runs it."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from deploy import ROOT
from harness.ports import free_ports
from harness.waiting import wait_until


class LoggedProcess:
    """`argv` started in the checkout, its output in `workdir/<name>.log`. `own_session`
    keeps a Ctrl-C at the terminal from reaching it before its parent can stop it."""

    def __init__(self, name: str, argv: list[str], workdir: Path, own_session: bool = False):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        # The child keeps its own copy of the descriptor; ours is closed at once.
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=own_session)

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{tail}")

    @contextlib.contextmanager
    def stopped_on_failure(self) -> Iterator[None]:
        """Stop it if the block fails (waiting for it to be ready, say), so that a start that
        never got ready leaves no process behind."""
        try:
            yield
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, and SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


class ServerProcess:
    """`python -m server` in a child process, as an operator runs it; `lines` is its log.
    Started once `listeners` servers log their address (one a worker with --workers)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, listeners: int = 1):
        self.listeners = listeners
        # One process unless the test asks for workers: the default (`auto`, one a CPU)
        # would put a supervisor between the test and the server it signals or kills.
        one = () if "--workers" in args else ("--workers", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server", *one, *args],
            # Many servers run at once in the tests: each gets its own metrics port.
            cwd=ROOT, env={**os.environ, "SARAH_METRICS_LISTEN": "127.0.0.1:0", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        # Read from the start and to the end, or a busy server blocks once the pipe's
        # buffer is full of log lines.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_until(self._started, 20, "the server to log its address")
        except (TimeoutError, RuntimeError) as failed:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"server did not start ({failed}):\n{self.log}") from None
        self.ports = self._ports()
        self.port = self.ports[0]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _ports(self) -> list[int]:
        """The ports logged as listened on so far, lowest first."""
        found = (re.search(r"listening on [\d.]+:(\d+)", line) for line in list(self.lines))
        return sorted(int(match.group(1)) for match in found if match)

    def _started(self) -> bool:
        if len(self._ports()) >= self.listeners:
            return True
        if self.proc.poll() is not None and not self._reader.is_alive():
            raise RuntimeError(f"exited {self.proc.returncode}")
        return False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> str:
        """Send `sig`, wait for exit, return everything it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.log


def start_workers(count: int, database_url: str, *args: str,
                  env: dict[str, str] | None = None) -> ServerProcess:
    """`python -m server --workers count` on `count` consecutive free ports (its `ports`),
    started once every worker logs its address: a connection could not tell, as its own
    local port could be one of them."""
    base = free_ports(count)[0]
    return ServerProcess("--workers", str(count), "--listen", f"127.0.0.1:{base}",
                         "--database-url", database_url, "--metrics-listen", "", *args,
                         env=env, listeners=count)
