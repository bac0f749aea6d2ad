"""`make run`'s supervisor, envoy.yaml's validity, and the README's curl examples."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.envoy_stack import ENVOY, envoy_config, free_port, request, start_stack
from tests.support.helpers import ROOT

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def test_envoy_config_validates() -> None:
    done = subprocess.run([ENVOY, "--mode", "validate", "-c", "envoy.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_admin_listens_on_loopback_only() -> None:
    text = (ROOT / "envoy.yaml").read_text()
    admin = text[text.index("admin:"):text.index("static_resources:")]
    assert "address: 127.0.0.1" in admin and "0.0.0.0" not in text


def _start_as_a_terminal_job(workdir: Path, envoy_yaml: Path,
                             grpc_port: int) -> subprocess.Popen[str]:
    """start_stack's stack, leading a process group of its own as `make run` does in a
    terminal: the group a hangup is sent to when the terminal closes."""
    return subprocess.Popen(
        [sys.executable, "-m", "tools.stack", "--listen", f"127.0.0.1:{grpc_port}",
         "--database-url", f"sqlite:///{workdir / 'sarah.db'}"],
        cwd=ROOT, env={"SARAH_ENVOY_CONFIG": str(envoy_yaml), "PATH": "/usr/bin:/bin",
                       "SARAH_METRICS_LISTEN": "127.0.0.1:0"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


class RunningStack:
    """`python -m tools.stack` on free ports, as `make run` starts it."""

    def __init__(self, workdir: Path, own_group: bool = False):
        self.http, self.admin, self.grpc = free_port(), free_port(), free_port()
        config = workdir / "envoy.yaml"
        config.write_text(envoy_config(self.http, self.admin, self.grpc))
        start = _start_as_a_terminal_job if own_group else start_stack
        self.proc = start(workdir, config, self.grpc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request("127.0.0.1", self.http, "GET", "/sarah/stats")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError("stack did not serve: " + self.proc.communicate()[0])

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out


@pytest.fixture
def stack(tmp_path: Path):
    running = RunningStack(tmp_path)
    yield running
    if running.proc.poll() is None:
        # SIGTERM, so the supervisor stops its children: a SIGKILL would orphan them.
        running.proc.terminate()
        running.finish()


def _children(pid: int) -> list[int]:
    done = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                          text=True)
    return [int(p) for p in done.stdout.split()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stack_serves_and_stops_both_cleanly(stack: RunningStack, sig: int) -> None:
    children = _children(stack.proc.pid)
    assert len(children) == 2
    stack.proc.send_signal(sig)
    code, out = stack.finish()
    assert code == 0, out
    assert f"HTTP/JSON and gRPC on 127.0.0.1:{stack.http}" in out
    assert f"listening on 127.0.0.1:{stack.grpc}" in out
    assert "Traceback" not in out
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def test_stack_stops_envoy_and_fails_when_the_server_dies(stack: RunningStack) -> None:
    server_pid = next(pid for pid in _children(stack.proc.pid)
                      if "server" in Path(f"/proc/{pid}/cmdline").read_text())
    subprocess.run(["kill", "-KILL", str(server_pid)], check=True)
    code, out = stack.finish()
    assert code != 0
    assert "server exited" in out
    assert not _children(stack.proc.pid)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _still_listening(ports: list[int], within: float = 10) -> list[int]:
    """The ports that something still listens on after `within` seconds."""
    deadline = time.monotonic() + within
    while (held := [p for p in ports if _listening(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return held


def _alive(pid: int) -> bool:
    """Running, not ended (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _still_alive(pids: list[int], within: float = 10) -> list[int]:
    """The processes still running after `within` seconds."""
    deadline = time.monotonic() + within
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_killing_the_supervisor_ends_the_stack(stack: RunningStack) -> None:
    children = _children(stack.proc.pid)
    assert len(children) == 2
    stack.proc.kill()  # SIGKILL: no handler runs, the kernel tells the children
    assert _still_listening([stack.http, stack.admin, stack.grpc]) == []
    assert _still_alive(children) == []
    stack.finish()


def test_closing_the_terminal_stops_the_stack(tmp_path: Path) -> None:
    stack = RunningStack(tmp_path, own_group=True)
    try:
        children = _children(stack.proc.pid)
        os.killpg(stack.proc.pid, signal.SIGHUP)  # what a closing terminal sends its job
        code, out = stack.finish()
    finally:
        if stack.proc.poll() is None:
            stack.proc.kill()
    assert code == 0, out
    assert _still_listening([stack.http, stack.admin, stack.grpc]) == []
    assert _still_alive(children) == []
    assert "Traceback" not in out


def test_a_server_on_a_served_port_says_so_and_exits(stack: RunningStack,
                                                      tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "server", "--listen", f"127.0.0.1:{stack.grpc}",
         "--database-url", f"sqlite:///{tmp_path / 'other.db'}", "--metrics-listen", ""],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{stack.grpc}: port {stack.grpc} is in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_stack_on_a_served_http_port_stops_and_says_why(stack: RunningStack,
                                                          tmp_path: Path) -> None:
    grpc_port = free_port()
    config = tmp_path / "second.yaml"
    config.write_text(envoy_config(stack.http, free_port(), grpc_port))
    second = start_stack(tmp_path, config, grpc_port)
    try:
        out, _ = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 1, out
    assert "stopped because envoy exited with status 1" in out
    assert f"cannot bind '127.0.0.1:{stack.http}': Address already in use" in out
    assert not _listening(grpc_port)  # its server was stopped too
    assert request("127.0.0.1", stack.http, "GET", "/sarah/stats")[0] == 200  # first one intact


def _start_workers(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], list[int]]:
    """`sarah-server --workers 2` on two consecutive free ports, once both listen."""
    base = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--workers", "2", "--listen", f"127.0.0.1:{base}",
         "--database-url", f"sqlite:///{tmp_path / 'sarah.db'}", "--metrics-listen", "",
         *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Read their logs, not connect: a connection's own local port could be base + 1.
    assert proc.stdout is not None
    started = ""
    while started.count("listening on") < 2:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("workers did not start: " + started)
        started += line
    return proc, [base, base + 1]


def test_killing_the_workers_supervisor_ends_its_workers(tmp_path: Path) -> None:
    proc, ports = _start_workers(tmp_path)
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    assert _still_listening(ports) == []
    assert _still_alive(workers) == []


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
    proc, ports = _start_workers(tmp_path, "--api-keys-file", str(keys))
    try:
        assert {_stats_code(p, "new-key") for p in ports} == {grpc.StatusCode.UNAUTHENTICATED}
        keys.write_text("old-key *\nnew-key *\n")
        proc.send_signal(signal.SIGHUP)  # as to one server: re-read the keys file
        deadline = time.monotonic() + 10
        while {_stats_code(p, "new-key") for p in ports} != {grpc.StatusCode.OK}:
            assert time.monotonic() < deadline, "a worker did not reload its keys"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert out.count("reloaded 2 API keys") == 2


def _readme_commands(tool: str) -> list[str]:
    """The README's shell commands that start with `tool`, continuation lines joined."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    # The TLS examples (they name a CA file) need a TLS stack: test_edge_tls runs them.
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith(tool + " ") and "cacert" not in line]


def test_every_readme_curl_example_works(stack: RunningStack) -> None:
    commands = _readme_commands("curl")
    assert len(commands) >= 6
    for command in commands:
        argv = shlex.split(command.replace("127.0.0.1:8080", f"127.0.0.1:{stack.http}"),
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
        argv = shlex.split(command.replace("127.0.0.1:50051", f"127.0.0.1:{stack.grpc}")
                                  .replace("127.0.0.1:8080", f"127.0.0.1:{stack.http}"))
        done = subprocess.run([GRPCURL, *argv[1:]], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (command, done.stderr)


def test_grpcurl_works_through_envoy(stack: RunningStack) -> None:
    target = f"127.0.0.1:{stack.http}"
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
