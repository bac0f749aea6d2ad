"""`make run`'s supervisor, envoy.yaml's validity, and the README's curl examples."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from deploy import ROOT
from deploy.envoy_config import envoy_binary
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.config import cpus
from tests.support.envoy import envoy_config
from tests.support.http_calls import request
from tests.support.ports import free_port, free_ports
from tests.support.processes import start_workers
from tests.support.stack import MakeRunStack, start_stack
from tests.support.waiting import still_holding, wait_until

ENVOY = envoy_binary()
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def test_envoy_config_validates() -> None:
    done = subprocess.run([ENVOY, "--mode", "validate", "-c", "envoy.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_admin_listens_on_loopback_only() -> None:
    text = (ROOT / "envoy.yaml").read_text()
    admin = text[text.index("admin:"):text.index("static_resources:")]
    assert "address: 127.0.0.1" in admin and "0.0.0.0" not in text


class RunningStack(MakeRunStack):
    """`python -m tools.stack` on free ports, as `make run` starts it; `own_session` as
    `make run` starts it in a terminal."""

    def __init__(self, workdir: Path, own_session: bool = False):
        http, admin, grpc_port = free_port(), free_port(), free_port()
        config = workdir / "envoy.yaml"
        config.write_text(envoy_config(http, admin, grpc_port))
        super().__init__(workdir, config, grpc_port=grpc_port, http_port=http,
                         admin_port=admin, own_session=own_session)

    @property
    def ports(self) -> list[int]:
        return [self.port, self.admin_port, self.grpc_port]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path)
    yield running
    running.stop()  # SIGTERM if it still runs: the supervisor stops its children in order


def _children(pid: int) -> list[int]:
    done = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                          text=True)
    return [int(p) for p in done.stdout.split()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stack_serves_and_stops_both_cleanly(stack: RunningStack, sig: int) -> None:
    children = _children(stack.proc.pid)
    assert len(children) == 2
    stack.proc.send_signal(sig)
    out = stack.output()
    assert stack.proc.returncode == 0, out
    assert f"HTTP/JSON and gRPC on 127.0.0.1:{stack.port}" in out
    assert f"listening on 127.0.0.1:{stack.grpc_port}" in out
    assert "Traceback" not in out
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_stack_stops_envoy_and_fails_when_the_server_dies(stack: RunningStack) -> None:
    server_pid = next(pid for pid in _children(stack.proc.pid)
                      if "server" in Path(f"/proc/{pid}/cmdline").read_text())
    subprocess.run(["kill", "-KILL", str(server_pid)], check=True)
    out = stack.output()
    assert stack.proc.returncode != 0
    assert "server exited" in out
    assert not _children(stack.proc.pid)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    """Running, not ended (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_killing_the_supervisor_ends_the_stack(stack: RunningStack) -> None:
    children = _children(stack.proc.pid)
    assert len(children) == 2
    stack.proc.kill()  # SIGKILL: no handler runs, the kernel tells the children
    assert still_holding(stack.ports, _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []


def test_closing_the_terminal_stops_the_stack(tmp_path: Path) -> None:
    stack = RunningStack(tmp_path, own_session=True)
    try:
        children = _children(stack.proc.pid)
        os.killpg(stack.proc.pid, signal.SIGHUP)  # what a closing terminal sends its job
        out = stack.output()
    finally:
        stack.stop()  # SIGTERM only if the hangup did not stop it
    assert stack.proc.returncode == 0, out
    assert still_holding(stack.ports, _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []
    assert "Traceback" not in out


def test_a_server_on_a_served_port_says_so_and_exits(stack: RunningStack,
                                                      tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server", "--listen", f"127.0.0.1:{stack.grpc_port}",
         "--database-url", f"sqlite:///{tmp_path / 'other.db'}", "--metrics-listen", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    port = stack.grpc_port
    assert f"cannot listen on 127.0.0.1:{port}: port {port} is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_stack_on_a_served_http_port_stops_and_says_why(stack: RunningStack,
                                                          tmp_path: Path) -> None:
    grpc_port = free_port()
    config = tmp_path / "second.yaml"
    config.write_text(envoy_config(stack.port, free_port(), grpc_port))
    second = start_stack(tmp_path, config, grpc_port)
    try:
        out, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 1, out
    assert "stopped because envoy exited with status 1" in out
    assert f"cannot bind '127.0.0.1:{stack.port}': Address already in use" in out
    assert not _listening(grpc_port)  # its server was stopped too
    assert request("127.0.0.1", stack.port, "GET", "/sarah/stats")[0] == 200  # first one intact


def _sqlite_url(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'sarah.db'}"


def test_killing_the_workers_supervisor_ends_its_workers(tmp_path: Path) -> None:
    workers = start_workers(2, _sqlite_url(tmp_path))
    children = _children(workers.proc.pid)
    assert len(children) == 2
    workers.proc.kill()
    workers.proc.wait()
    assert still_holding(workers.ports, _listening, within=10) == []
    assert still_holding(children, _alive, within=10) == []
    workers.stop()  # reads the rest of their log and closes the pipe


def _stats_code(port: int, key: str) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            sarah_pb2_grpc.SarahServiceStub(channel).GetStats(
                pb.GetStatsRequest(), metadata=[("authorization", f"Bearer {key}")], timeout=10)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def test_sighup_to_the_workers_supervisor_reloads_every_workers_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("old-key *\n")
    workers = start_workers(2, _sqlite_url(tmp_path), "--api-keys-file", str(keys))
    try:
        codes = {_stats_code(p, "new-key") for p in workers.ports}
        assert codes == {grpc.StatusCode.UNAUTHENTICATED}
        keys.write_text("old-key *\nnew-key *\n")
        workers.proc.send_signal(signal.SIGHUP)  # as to one server: re-read the keys file
        wait_until(lambda: {_stats_code(p, "new-key") for p in workers.ports}
                   == {grpc.StatusCode.OK}, 10, "every worker to reload its keys")
    finally:
        out = workers.stop()
    assert workers.proc.returncode == 0, out
    assert out.count("reloaded 2 API keys") == 2


def _readme_commands(tool: str) -> list[str]:
    """The README's shell commands that start with `tool`, continuation lines joined."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    # The TLS examples (they name a CA file) need a TLS stack: test_edge_tls runs them.
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith(tool + " ") and "cacert" not in line
            and "https://" not in line]


def test_every_readme_curl_example_works(stack: RunningStack) -> None:
    commands = _readme_commands("curl")
    assert len(commands) >= 6
    for command in commands:
        argv = shlex.split(command.replace("127.0.0.1:8080", f"127.0.0.1:{stack.port}"),
                           comments=True)
        done = subprocess.run([*argv, "--silent", "--show-error", "--write-out",
                               "\n%{http_code}"], capture_output=True, text=True, timeout=30)
        body, _, status = done.stdout.rpartition("\n")
        expected = re.search(r"# (\d{3})", command)
        assert done.returncode == 0, (command, done.stderr)
        assert status == (expected.group(1) if expected else "200"), (command, body)
        assert body.lstrip().startswith("{"), (command, body)


def test_every_readme_grpcurl_example_works(stack: RunningStack) -> None:
    commands = _readme_commands("grpcurl")
    assert len(commands) >= 5
    for command in commands:
        argv = shlex.split(command.replace("127.0.0.1:50051", f"127.0.0.1:{stack.grpc_port}")
                                  .replace("127.0.0.1:8080", f"127.0.0.1:{stack.port}"))
        done = subprocess.run([GRPCURL, *argv[1:]], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr)


def test_grpcurl_works_through_envoy(stack: RunningStack) -> None:
    target = f"127.0.0.1:{stack.port}"
    listed = subprocess.run([GRPCURL, "-plaintext", target, "list"], capture_output=True,
                            text=True, timeout=30, check=True).stdout.split()
    assert "sarah.v1.SarahService" in listed
    subprocess.run([GRPCURL, "-plaintext", "-d", '{"contact_phone": "0812-3456-7890"}', target,
                    "sarah.v1.SarahService/UpsertState"], capture_output=True, timeout=30,
                   check=True)
    stats = subprocess.run([GRPCURL, "-plaintext", "-d", "{}", target,
                            "sarah.v1.SarahService/GetStats"],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert '"total": 1' in stats


def test_make_run_with_workers_auto_balances_over_one_worker_per_cpu(tmp_path: Path) -> None:
    workers = cpus()
    http, admin, *grpc_ports = free_ports(2 + workers)
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(http, admin, grpc_ports[0]))
    # SARAH_WORKERS as an operator sets it (`auto` is also the default).
    stack = MakeRunStack(tmp_path, config, grpc_port=grpc_ports[0], http_port=http,
                         admin_port=admin, env={"SARAH_WORKERS": "auto"})
    try:
        healthy = "/stats?filter=^cluster.sarah_grpc.membership_healthy$"
        wait_until(lambda: str(request("127.0.0.1", admin, "GET", healthy)[2]).strip()
                   .endswith(f": {workers}"), 30, "Envoy to find every worker healthy")
        served: dict[int, int] = {}

        def every_worker_served() -> bool:
            assert request("127.0.0.1", http, "GET", "/sarah/stats")[0] == 200
            _, _, clusters = request("127.0.0.1", admin, "GET", "/clusters")
            served.update({int(port): int(count) for port, count in re.findall(
                r"sarah_grpc::127\.0\.0\.1:(\d+)::rq_total::(\d+)", str(clusters))})
            assert set(served) == set(grpc_ports[:workers]), clusters
            return all(served.values())

        wait_until(every_worker_served, 30, "Envoy to spread calls over every worker")
    finally:
        out = stack.stop()
    for port in grpc_ports[:workers]:
        assert f"listening on 127.0.0.1:{port}" in out
