"""Server replicas (three unless told) on one PostgreSQL database behind one Envoy, as `make
cluster` runs them: for the tests of what replicas share (writes, watchers, housekeeping,
drains) and of the database failing over under them (tests/ha)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from client import SarahClient
from harness.envoy import EnvoyProcess
from harness.ports import free_port
from harness.processes import ServerProcess


class Cluster:
    def __init__(self, workdir: Path, database_url: str, env: dict[str, str] | None = None,
                 replicas: int = 3, args: tuple[str, ...] = ()):
        """`replicas` servers, each also given `args`, and Envoy in front of them."""
        self.database_url = database_url
        self.env = env
        self.args = args
        self.ports = [free_port() for _ in range(replicas)]
        self.replicas: dict[int, ServerProcess] = {}
        try:
            for port in self.ports:
                self.replicas[port] = self._start(port)
            self.envoy = EnvoyProcess(self.ports, workdir, eject_failing=True)
        except BaseException:
            for replica in self.replicas.values():
                replica.stop()
            raise
        self.wait_healthy(replicas)

    def _start(self, port: int) -> ServerProcess:
        return ServerProcess("--listen", f"127.0.0.1:{port}", "--database-url",
                             self.database_url, "--drain-seconds", "2", *self.args, env=self.env)

    def restart(self, port: int) -> None:
        self.replicas[port] = self._start(port)

    def wait_healthy(self, count: int) -> None:
        self.envoy.wait_healthy(count)

    def client(self) -> SarahClient:
        return SarahClient(f"127.0.0.1:{self.envoy.port}", timeout=20)

    def stop(self) -> None:
        self.envoy.stop()
        # Each drains for 2 s on SIGTERM: all at once, not one after another.
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(ServerProcess.stop, self.replicas.values()))
