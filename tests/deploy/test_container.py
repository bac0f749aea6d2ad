"""The image alone: docs/operations.md's run line (the README's too) serves gRPC with API
keys, the time from `podman run` to the first served call, Envoy beside it from the same
image, a prompt stop on SIGTERM as PID 1, the HEALTHCHECK, a safe default without keys, and
what the final stage holds (and does not)."""

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.ports import free_port
from harness.waiting import wait_until
from tests.deploy.conftest import MEASURED, readme_grpcurl_lines
from tests.support.docs import docs_blocks, shell_lines
from tests.support.podman import Podman

_SECTION = "Running the image"
_BIN = str(Path(sys.executable).parent)


def _documented(podman: Podman, image: str, port: int) -> tuple[list[str], str, list[str]]:
    """The section's ```sh blocks as a reader runs them, with this run's names and port:
    the set-up and `podman run` lines, the grpcurl call that follows them, and the lines
    that start Envoy beside the server."""
    [build], [run, envoy] = (docs_blocks("docs/operations.md", heading, "sh") for heading in
                             ("Building the image", _SECTION))
    assert "podman build --format docker -t sarah-service ." in build

    def ours(line: str) -> str:
        return (line.replace("--name sarah ", f"--name {podman.name('server')} ")
                .replace("--name sarah-envoy ", f"--name {podman.name('envoy')} ")
                .replace("container:sarah ", f"container:{podman.name('server')} ")
                .replace("-p 50051:50051", f"-p 127.0.0.1:{port}:50051")
                .replace("sarah-data:/data", f"{podman.name('data')}:/data")
                .replace(" sarah-service", f" {image}")
                .replace("127.0.0.1:50051", f"127.0.0.1:{port}"))

    # The README's two lines are these, shortened.
    [readme] = docs_blocks("README.md", "Containers and Kubernetes", "sh")
    readme_build, readme_run = shell_lines(readme)
    assert readme_build.startswith(build.split("#")[0].strip())
    assert " ".join(readme_run.split()) in [" ".join(line.split()) for line in shell_lines(run)]
    *setup, call = map(ours, shell_lines(run))
    assert call.startswith(".venv/bin/grpcurl ") and "podman run" in setup[-1], setup
    return setup, call, [ours(line) for line in shell_lines(envoy)]


def _bash(script: str, cwd: Path, podman: Podman, timeout: float = 120
          ) -> subprocess.CompletedProcess[str]:
    env = {**podman.env, "PATH": f"{_BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_documented_run_serves_grpc_with_keys_and_stops_promptly(
        podman: Podman, image: str, tmp_path: Path) -> None:
    port = free_port()
    setup, call, envoy = _documented(podman, image, port)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)  # the checkout's
    started = time.monotonic()
    done = _bash("set -e\n" + "\n".join(setup), tmp_path, podman)
    assert done.returncode == 0, done.stdout + done.stderr
    container = podman.name("server")
    replies: list[str] = []

    def served() -> bool:
        answer = _bash(call, tmp_path, podman, timeout=30)
        replies.append(answer.stdout + answer.stderr)
        return answer.returncode == 0

    try:
        wait_until(served, 60, "the container's first served call", interval=0.1)
    except TimeoutError:
        raise AssertionError(f"{replies[-1]}\n{podman.logs(container)}") from None
    first_call = time.monotonic() - started
    MEASURED["podman run to first served call"] = f"{first_call:.1f} s"
    assert '"contact_phone": "+6281234567890"' in replies[-1]

    # The key is required: the same call without it is refused.
    keyless = _bash(call.replace("-H 'x-api-key: sk_local_1' ", ""), tmp_path, podman)
    assert keyless.returncode != 0 and "Unauthenticated" in keyless.stderr, keyless.stderr
    # The image's HEALTHCHECK (kept by --format docker) runs the probe inside it.
    health = podman("healthcheck", "run", container, check=False)
    assert health.returncode == 0, health.stdout + health.stderr
    # Its user, not root, owns the database in the /data volume.
    owner = podman("exec", container, "stat", "-c", "%u %n", "/data/sarah.db").stdout
    assert owner.split() == ["10001", "/data/sarah.db"]

    # Envoy from the same image, in the server's network namespace, as the docs start it.
    done = _bash("set -e\n" + "\n".join(envoy), tmp_path, podman)
    assert done.returncode == 0, done.stdout + done.stderr
    through_envoy = ("import urllib.request as u; print(u.urlopen(u.Request("
                     "'http://127.0.0.1:8080/sarah/stats', headers={'x-api-key': 'sk_local_1'}"
                     "), timeout=5).status)")
    wait_until(lambda: podman("exec", container, "python", "-c", through_envoy,
                              check=False).stdout.strip() == "200",
               30, "Envoy beside the server to serve", interval=0.5)
    podman("stop", "--time", "30", podman.name("envoy"), timeout=60)

    started = time.monotonic()
    podman("stop", "--time", "30", container, timeout=60)
    stopped = time.monotonic() - started
    MEASURED["podman stop (SIGTERM to PID 1)"] = f"{stopped:.1f} s"
    state = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
    log = podman.logs(container)
    assert state == "0", log  # it exited by itself, not by the SIGKILL 30 s later
    assert stopped < 5, log
    assert '"message": "stopped"' in log, log


def test_without_keys_it_refuses_a_public_address(podman: Podman, image: str) -> None:
    done = podman("run", "--rm", "--name", podman.name("keyless"), image, check=False,
                  timeout=60)
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0:50051 (--listen) without API keys" in done.stderr


def test_the_final_stage_holds_the_service_and_no_build_tools(podman: Podman,
                                                              image: str) -> None:
    script = ("id -u; command -v gcc cc make pip pip3 git || true; "
              "python -c 'import server.app, client, envoy, psycopg, grpc_health' && "
              "echo imports; python -c 'import pytest' 2>/dev/null || echo no-pytest; "
              "ls /opt/sarah/venv/lib/python3.11/site-packages | grep -c dist-info; "
              "test -w /data && echo data-writable")
    out = podman("run", "--rm", "--name", podman.name("contents"), "--entrypoint", "sh",
                 image, "-c", script, timeout=60).stdout.split()
    assert out[0] == "10001"
    assert out[1:3] == ["imports", "no-pytest"], out
    assert out[-1] == "data-writable"
    MEASURED["distributions in the venv"] = out[3]


def test_the_readmes_grpcurl_lines_pass_against_the_image_alone(podman: Podman, image: str,
                                                                 tmp_path: Path) -> None:
    """On the host's network and its loopback, as `make run` serves, the image needs no
    keys: the README's tour, as written, against the server of the image alone."""
    port = free_port()
    name = podman.name("tour")
    podman("run", "-d", "--name", name, "--network", "host", image, "sarah-server",
           "--listen", f"127.0.0.1:{port}", "--metrics-listen", "")
    try:
        wait_until(lambda: podman("exec", name, "python", "-m", "server.probe", "--target",
                                  f"127.0.0.1:{port}", check=False).returncode == 0,
                   30, "the server to serve", interval=0.2)
    except TimeoutError:
        raise AssertionError(podman.logs(name)) from None
    readme_grpcurl_lines(tmp_path, port)
    podman("stop", "--time", "30", name, timeout=60)
