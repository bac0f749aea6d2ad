"""Three server replicas on one PostgreSQL database behind one Envoy, as `make cluster` runs
them: for the tests of what replicas share (writes, watchers, housekeeping, drains)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from client import SarahClient
from harness.envoy import EnvoyProcess
from harness.ports import free_port
from harness.processes import ServerProcess


class Cluster:
    def __init__(self, workdir: Path, database_url: str, env: dict[str, str] | None = None):
        self.database_url = database_url
        self.env = env
        self.ports = [free_port() for _ in range(3)]
        self.replicas = {port: self._start(port) for port in self.ports}
        self.envoy = EnvoyProcess(self.ports, workdir, eject_failing=True)
        self.wait_healthy(3)

    def _start(self, port: int) -> ServerProcess:
        return ServerProcess("--listen", f"127.0.0.1:{port}", "--database-url",
                             self.database_url, "--drain-seconds", "2", env=self.env)

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
