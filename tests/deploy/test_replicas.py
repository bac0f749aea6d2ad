"""Two server containers over one PostgreSQL behind an Envoy container, all of the image:
`podman stop` of one replica completes within the Pod's grace period while a client that
keeps writing through Envoy sees no failure and loses nothing."""

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from client import SarahClient
from deploy import ROOT
from deploy.envoy_config import (
    dump,
    load,
    with_absolute_descriptor,
    with_ports,
    with_replicas,
)
from deploy.pod import IMAGE_ROOT
from harness.http_calls import request
from harness.ports import free_port
from harness.waiting import wait_until
from tests.deploy.conftest import MEASURED
from tests.support.databases import fresh_postgres_database
from tests.support.podman import Podman
from tests.support.relay import UnixRelay, over_tcp, postgres_socket
from tests.support.threads import CountedWrites

# As make cluster's replicas: keep serving this long after NOT_SERVING, while Envoy's health
# check (every second, two failures) moves calls to the other replica.
_DRAIN_SECONDS = 3
_LEAD = "+6281234567100"


def _grace_period() -> int:
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    grace: int = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    return grace


class _Replicas:
    """The containers, all on the host's network (loopback ports of their own)."""

    def __init__(self, podman: Podman, image: str, database_url: str, workdir: Path):
        self.podman, self.image = podman, image
        self.ports = [free_port(), free_port()]
        self.http, self.admin = free_port(), free_port()
        config = with_replicas(with_ports(load(), http=self.http, admin=self.admin), self.ports)
        path = workdir / "envoy.yaml"
        path.write_text(dump(with_absolute_descriptor(config, IMAGE_ROOT)))
        for index, port in enumerate(self.ports):
            podman("run", "-d", "--name", podman.name(f"replica-{index}"), "--network", "host",
                   image, "sarah-server", "--listen", f"127.0.0.1:{port}", "--database-url",
                   database_url, "--drain-seconds", str(_DRAIN_SECONDS), "--metrics-listen", "")
        podman("run", "-d", "--name", podman.name("front"), "--network", "host", "-v",
               f"{path}:/etc/sarah/envoy.yaml:ro", image, "envoy", "-c", "/etc/sarah/envoy.yaml",
               "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn")

    def healthy(self) -> int:
        _, _, text = request("127.0.0.1", self.admin, "GET",
                             "/stats?filter=^cluster.sarah_grpc.membership_healthy$")
        return int(str(text).rsplit(":", 1)[1]) if text else 0

    def wait_healthy(self) -> None:
        try:
            wait_until(lambda: self.healthy() == 2, 60, "Envoy to find both replicas healthy",
                       interval=0.2, ignoring=(OSError,))
        except TimeoutError:
            raise AssertionError("\n".join(self.podman.logs(self.podman.name(n)) for n in
                                           ("replica-0", "replica-1", "front"))) from None


@pytest.fixture
def replicas(podman: Podman, image: str, postgres_server_url: str,
             tmp_path: Path) -> Iterator[_Replicas]:
    database = fresh_postgres_database(postgres_server_url, "sarah_replicas")
    relay = UnixRelay(postgres_socket(database))
    try:
        running = _Replicas(podman, image, over_tcp(database, relay.port), tmp_path)
        running.wait_healthy()
        yield running
    finally:
        relay.close()


def _writer(port: int, count: int = 4) -> CountedWrites:
    """Threads adding one message each call to one lead through Envoy, every call with its
    request_id (the client retries UNAVAILABLE, safely); `acked` counts the OKs."""
    ids = itertools.count()

    def write(sarah: SarahClient, index: int, _round: int) -> object:
        return sarah.upsert_state(contact_phone=_LEAD, add_messages=1,
                                  request_id=f"replicas-{index}-{next(ids)}")

    return CountedWrites([f"127.0.0.1:{port}"], count, write)


def test_stopping_a_replica_fails_no_call_and_ends_within_the_grace_period(
        replicas: _Replicas) -> None:
    grace = _grace_period()
    victim = replicas.podman.name("replica-1")
    with _writer(replicas.http) as writer:
        time.sleep(2)
        before = writer.acked
        started = time.monotonic()
        replicas.podman("stop", "--time", str(grace), victim, timeout=grace + 30)
        stopped = time.monotonic() - started
        time.sleep(2)  # the survivor serves everything
    MEASURED["podman stop of a replica under load"] = (
        f"{stopped:.1f} s (drain {_DRAIN_SECONDS} s; grace period {grace} s); "
        f"{writer.acked} writes, none failed")
    log = replicas.podman.logs(victim)
    assert not writer.errors, writer.errors[:3]
    assert before > 0 and writer.acked > before
    assert stopped < grace, log
    code = replicas.podman("inspect", "--format", "{{.State.ExitCode}}", victim).stdout
    assert code.strip() == "0", log  # it stopped by itself, not by SIGKILL
    with SarahClient(f"127.0.0.1:{replicas.http}", timeout=20) as sarah:
        assert sarah.get_state(contact_phone=_LEAD).message_count == writer.acked
