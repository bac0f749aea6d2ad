"""`make run`'s supervisor, envoy.yaml's validity, and the README's curl examples."""

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


class RunningStack:
    """`python -m tools.stack` on free ports, as `make run` starts it."""

    def __init__(self, workdir: Path):
        self.http, self.admin, self.grpc = free_port(), free_port(), free_port()
        config = workdir / "envoy.yaml"
        config.write_text(envoy_config(self.http, self.admin, self.grpc))
        self.proc = start_stack(workdir, config, self.grpc)
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
