"""The container tests (`make deploy-test`, not `make test`): podman set up for this run, the
base image, and the service's image built from the Containerfile, cold and then cached.
The figures they measure are printed at the end of the run, for the docs to quote."""

import ssl
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import ROOT
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


def _build(podman: Podman, tag: str, *extra: str) -> float:
    """podman build of the checkout; the seconds it took. pip in the build reaches PyPI over
    the host's network, and trusts the host's CA bundle (a build secret, not kept)."""
    secret = []
    cafile = ssl.get_default_verify_paths().cafile
    if cafile and Path(cafile).is_file():
        secret = ["--secret", f"id=ca,src={cafile}"]
    started = time.monotonic()
    podman("build", "--format", "docker", "--network", "host", "--pull=never",
           "--label", f"{LABEL}={podman.run_id}", *secret, *extra, "--tag", tag,
           "--file", str(ROOT / "Containerfile"), str(ROOT), timeout=1200)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def image(podman: Podman, base: str) -> str:
    """The image, built twice: without cache (every layer, the requirements from PyPI), then
    again unchanged (every layer from the first build's cache)."""
    tag = f"localhost/sarah-service:{_version()}-{podman.run_id}"
    cold = _build(podman, tag, "--no-cache")
    cached = _build(podman, tag)
    MEASURED["build, cold"] = f"{cold:.0f} s"
    MEASURED["build, cached"] = f"{cached:.1f} s"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    MEASURED["image size"] = f"{size / 1e6:.0f} MB ({size / 2**20:.0f} MiB)"
    return tag
