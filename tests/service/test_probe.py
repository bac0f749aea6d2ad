"""`python -m server.probe`, the image's HEALTHCHECK and the Pod's liveness command: ready
only while SERVING, live on any answer, failing when nothing answers."""

import subprocess
import sys

import pytest

from deploy import ROOT
from harness.ports import free_port
from server.app import RunningServer
from server.probe import loopback_target


def _probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.probe", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env=env)


@pytest.mark.parametrize(("listen", "target"), [
    ("0.0.0.0:50051", "127.0.0.1:50051"), ("[::]:8000", "127.0.0.1:8000"),
    ("127.0.0.1:50052", "127.0.0.1:50052"), ("10.1.2.3:50051", "10.1.2.3:50051")])
def test_a_wildcard_listen_address_is_probed_on_loopback(listen: str, target: str) -> None:
    assert loopback_target(listen) == target


def test_a_serving_server_is_ready_and_live(sqlite_server: RunningServer) -> None:
    target = f"127.0.0.1:{sqlite_server.port}"
    ready = _probe("--target", target)
    assert ready.returncode == 0, ready.stderr
    assert ready.stdout.strip() == f"{target}: SERVING"
    # As the image runs it: the port from SARAH_LISTEN, the wildcard probed on loopback.
    from_env = _probe(env={"SARAH_LISTEN": f"0.0.0.0:{sqlite_server.port}"})
    assert from_env.returncode == 0, from_env.stderr


def test_a_draining_server_is_live_but_not_ready(sqlite_server: RunningServer) -> None:
    sqlite_server.health.enter_graceful_shutdown()  # what SIGTERM does first
    target = f"127.0.0.1:{sqlite_server.port}"
    assert _probe("--target", target).returncode == 1
    live = _probe("--target", target, "--live")
    assert live.returncode == 0, live.stderr
    assert live.stdout.strip() == f"{target}: NOT_SERVING"


def test_no_server_fails_both() -> None:
    target = f"127.0.0.1:{free_port()}"
    for args in ((), ("--live",)):
        done = _probe("--target", target, "--timeout", "1", *args)
        assert done.returncode == 1
        assert "no answer from the health service" in done.stderr
