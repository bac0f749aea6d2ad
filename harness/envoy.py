"""The real Envoy from envoy.yaml on free loopback ports, in front of one or more servers."""

import random
from collections.abc import Callable
from pathlib import Path

from deploy.envoy_config import (
    Config,
    dump,
    envoy_command,
    load,
    with_absolute_descriptor,
    with_outlier_detection,
    with_ports,
    with_replicas,
)
from harness.http_calls import request
from harness.ports import free_port
from harness.processes import LoggedProcess
from harness.waiting import wait_until


def envoy_config(http_port: int, admin_port: int, upstream_port: int) -> str:
    """envoy.yaml with its three ports moved and the descriptor path made absolute."""
    moved = with_ports(load(), http=http_port, admin=admin_port, upstream=upstream_port)
    return dump(with_absolute_descriptor(moved))


class EnvoyProcess(LoggedProcess):
    """Envoy from envoy.yaml on free ports, ready once its admin port says so, forwarding
    to the server on `upstream`, or balancing over the servers on each of its ports (and
    ejecting one that keeps failing if `eject_failing`). `derive` changes the config last
    (a deploy.envoy_config variant, or a test's own setting)."""

    def __init__(self, upstream: int | list[int], workdir: Path, *, name: str = "envoy",
                 concurrency: int = 1, eject_failing: bool = False, own_session: bool = False,
                 derive: Callable[[Config], Config] | None = None):
        self.port, self.admin_port = free_port(), free_port()
        self.upstreams = [upstream] if isinstance(upstream, int) else upstream
        config = with_ports(load(), http=self.port, admin=self.admin_port)
        config = with_replicas(with_absolute_descriptor(config), self.upstreams)
        if eject_failing:
            config = with_outlier_detection(config)
        if derive is not None:
            config = derive(config)
        path = workdir / f"{name}.yaml"
        path.write_text(dump(config))
        argv = envoy_command(path, "--base-id", str(random.randrange(1, 1 << 30)),
                             "--concurrency", str(concurrency))
        super().__init__(name, argv, workdir, own_session)
        with self.stopped_on_failure():
            wait_until(self._ready, 30, f"{name} to be ready", ignoring=(OSError,))

    def _ready(self) -> bool:
        self.check_alive()
        return self.call_admin("/ready")[0] == 200

    def call_admin(self, path: str) -> tuple[int, dict[str, str], object]:
        return request("127.0.0.1", self.admin_port, "GET", path)

    def stat(self, name: str) -> int:
        """One of Envoy's counters or gauges, from its admin port."""
        _, _, text = self.call_admin(f"/stats?filter=^{name}$")
        return int(str(text).rsplit(":", 1)[1]) if text else 0

    def wait_healthy(self, count: int, timeout: float = 20) -> None:
        """Until the health check finds `count` upstream servers healthy. The panic
        threshold is 0: before the first check passes, Envoy sends a server nothing."""
        def healthy() -> bool:
            self.check_alive()
            return self.stat("cluster.sarah_grpc.membership_healthy") == count

        wait_until(healthy, timeout, f"{count} healthy upstream servers", interval=0.2,
                   ignoring=(OSError,))

    def call(self, method: str, path: str, body: object = None,
             headers: dict[str, str | None] | None = None) -> tuple[int, dict[str, str], object]:
        return request("127.0.0.1", self.port, method, path, body, headers)
