"""The container tests (`make deploy-test`, not `make test`): podman set up for this run, the
base image, and the service's image built from the Containerfile, cold and then cached.
The figures they measure are printed at the end of the run, for the docs to quote."""

import os
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import ROOT
from tests.support.docs import docs_blocks, shell_lines
from tests.support.podman import LABEL, Podman
from tools import base_image

MEASURED: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASURED:
        terminalreporter.section("measured")
        for what, figure in MEASURED.items():
            terminalreporter.write_line(f"{what}: {figure}")


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    running = Podman(tmp_path_factory.mktemp("podman"))
    try:
        yield running
    finally:
        running.clean_up()


@pytest.fixture(scope="session")
def base(podman: Podman) -> str:
    if base_image.exists(podman.env):
        MEASURED["base image"] = f"{base_image.TAG}, already made"
    else:
        MEASURED["base image"] = f"{base_image.TAG}, made in {base_image.make(podman.env):.0f} s"
    return base_image.TAG


def _version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def _host_ca_bundle() -> str | None:
    """The CA bundle this machine's HTTPS clients trust (with a proxy's own CA, where there
    is one), as pip and Python here are told: their settings first, then the defaults."""
    candidates = [os.environ.get(name) for name in ("PIP_CERT", "SSL_CERT_FILE",
                                                    "REQUESTS_CA_BUNDLE")]
    candidates += [ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"]
    return next((path for path in candidates if path and Path(path).is_file()), None)


def _build(podman: Podman, tag: str, *extra: str) -> tuple[float, str]:
    """podman build of the checkout; the seconds it took, and what it printed. pip in the
    build reaches PyPI over the host's network, and trusts the host's CA bundle (a build
    secret, not kept)."""
    cafile = _host_ca_bundle()
    secret = ["--secret", f"id=ca,src={cafile}"] if cafile else []
    started = time.monotonic()
    done = podman("build", "--format", "docker", "--network", "host", "--pull=never",
                  "--label", f"{LABEL}={podman.run_id}", *secret, *extra, "--tag", tag,
                  "--file", str(ROOT / "Containerfile"), str(ROOT), timeout=1200)
    return time.monotonic() - started, done.stdout + done.stderr


@pytest.fixture(scope="session")
def image(podman: Podman, base: str) -> str:
    """The image, built twice: without cache (every layer, the requirements from PyPI), then
    again unchanged (every layer from the first build's cache)."""
    tag = f"localhost/sarah-service:{_version()}-{podman.run_id}"
    cold, _ = _build(podman, tag, "--no-cache")
    cached, printed = _build(podman, tag)
    assert "Using cache" in printed and "Successfully installed" not in printed, printed
    MEASURED["build, cold"] = f"{cold:.0f} s"
    MEASURED["build, cached"] = f"{cached:.1f} s"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    MEASURED["image size"] = f"{size / 1e6:.0f} MB ({size / 2**20:.0f} MiB)"
    return tag


def readme_grpcurl_lines(workdir: Path, port: int) -> None:
    """The README tour's grpcurl lines, in order, against 127.0.0.1:`port`."""
    grpcurl, _curl, _cli = docs_blocks("README.md", "A five-minute tour", "sh")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    lines = [line for line in shell_lines(grpcurl) if line.startswith("grpcurl ")]
    assert len(lines) >= 10, lines
    for line in lines:
        done = subprocess.run(["bash", "-c", line.replace("127.0.0.1:50051",
                                                          f"127.0.0.1:{port}")],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
