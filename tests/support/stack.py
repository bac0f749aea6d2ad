"""A whole stack for end-to-end tests: a server and Envoy in front of it, either both in
reach of the test (`Stack`) or started by `python -m tools.stack` as `make run` does."""

import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy import ROOT
from harness.envoy import EnvoyProcess
from harness.http_calls import request
from harness.ports import free_port
from harness.waiting import wait_until
from server.app import RunningServer, create_server
from server.config import Config


class Stack:
    """A server in this process and Envoy in front of it; the server can be stopped and
    started again on its port."""

    def __init__(self, workdir: Path, db_url: str):
        self.grpc_port = free_port()
        self.db_url = db_url
        self.server: RunningServer | None = None
        self.start_server()
        self.envoy = EnvoyProcess(self.grpc_port, workdir)
        self.wait_until(lambda: self.envoy.call("GET", "/sarah/stats")[0] == 200)

    def start_server(self, **settings: Any) -> None:
        """The server on the stack's port and database; `settings` are more Config fields
        (api_keys_file, say), for this start only."""
        config = Config(listen=f"127.0.0.1:{self.grpc_port}", database_url=self.db_url,
                        workers=1, metrics_listen="", **settings)
        self.server = create_server(config)

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.shutdown(grace=None)
        self.server = None

    def stop(self) -> None:
        self.envoy.stop()
        if self.server:
            self.stop_server()

    @staticmethod
    def wait_until(condition: Callable[[], object], timeout: float = 15) -> None:
        wait_until(condition, timeout, "the stack to answer as expected")


def start_stack(workdir: Path, envoy_yaml: Path, grpc_port: int, *,
                own_session: bool = False,
                env: dict[str, str] | None = None,
                flags: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """`python -m tools.stack` as `make run` starts it, with Envoy reading `envoy_yaml`
    and the server on `grpc_port` over a SQLite file in `workdir`. `own_session` makes it
    lead a process group of its own, as `make run` does as a terminal's job: the group a
    hangup is sent to when the terminal closes. `env` adds to its environment, `flags`
    come first on its command line."""
    # One server process unless `flags` or `env` ask for workers: the stack's Envoy then
    # lists one endpoint, on `grpc_port`.
    one = () if "--workers" in flags or "SARAH_WORKERS" in (env or {}) else ("--workers", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "tools.stack", *flags, *one, "--listen", f"127.0.0.1:{grpc_port}",
         "--database-url", f"sqlite:///{workdir / 'sarah.db'}"],
        # Its own metrics port: other servers may hold the default one.
        cwd=ROOT, env={"SARAH_ENVOY_CONFIG": str(envoy_yaml), "PATH": "/usr/bin:/bin",
                       "SARAH_METRICS_LISTEN": "127.0.0.1:0", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=own_session,
    )


class MakeRunStack:
    """`python -m tools.stack` with SARAH_ENVOY_CONFIG naming `config` (as docs/operations.md
    starts a TLS stack: `SARAH_ENVOY_CONFIG=data/envoy-tls.yaml make run`), the ports those
    the config names; ready once Envoy finds the server healthy."""

    def __init__(self, workdir: Path, config: Path, *, grpc_port: int, http_port: int,
                 admin_port: int, own_session: bool = False,
                 env: dict[str, str] | None = None, flags: tuple[str, ...] = ()):
        self.port, self.admin_port, self.grpc_port = http_port, admin_port, grpc_port
        self.proc = start_stack(workdir, config, grpc_port, own_session=own_session, env=env,
                                flags=flags)
        # Read its output as it comes: once a pipe's 64 KiB are full, the server's next
        # log line blocks the call that writes it, and Envoy times the call out.
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            wait_until(self._healthy, 30, "the stack's server to be healthy", interval=0.2,
                       ignoring=(OSError,))
        except TimeoutError as late:
            raise AssertionError(f"{late}; the stack printed:\n{self.stop()}") from None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, self.output()
        _, _, stats = request("127.0.0.1", self.admin_port, "GET",
                              "/stats?filter=^cluster.sarah_grpc.membership_healthy$")
        healthy = re.search(r": (\d+)$", str(stats).strip())
        return healthy is not None and int(healthy.group(1)) >= 1  # one worker, or more

    def output(self, timeout: float = 30) -> str:
        """Everything it printed, once it has exited (on a signal sent to it, or by itself)."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return "".join(self._lines)

    def stop(self) -> str:
        """SIGTERM (the supervisor stops its children), and everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.output()
