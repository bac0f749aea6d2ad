"""What an operator reads: no password or API key in any output, JSON log lines with the
traceback of an unexpected error, and `sarah-server --version`."""

import json
import re
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from deploy import ROOT
from harness.postgres import fresh_postgres_database
from harness.processes import ServerProcess
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api.auth import hash_key
from tests.support.helpers import PHONE

SECRET = "S3cret-pw"
API_KEY = "key-that-must-not-be-logged"
MILLISECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")


def _sarah_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _with_password(url: str) -> tuple[str, str]:
    """`url` with a password (the embedded server trusts any), and that password."""
    parts = urlsplit(url)
    if parts.password:  # SARAH_TEST_POSTGRES_URL may bring a real one
        return url, parts.password
    user, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user.split(':')[0]}:{SECRET}@{host}").geturl(), SECRET


@pytest.fixture
def secret_url(postgres_server_url: str) -> tuple[str, str]:
    return _with_password(fresh_postgres_database(postgres_server_url, "sarah_secret"))


def test_start_up_line_and_logs_hide_the_password_and_keys(
        secret_url: tuple[str, str], tmp_path: Path) -> None:
    url, password = secret_url
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{hash_key(API_KEY)} * ops\n")
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", url,
                         "--api-keys-file", str(keys))
    with grpc.insecure_channel(proc.target) as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stub.GetStats(pb.GetStatsRequest(), metadata=(("x-api-key", API_KEY),), timeout=10)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetStats(pb.GetStatsRequest(), metadata=(("authorization", "Bearer wrong-key"),),
                          timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    log = proc.stop()
    assert ":***@" in next(line for line in log.splitlines() if "listening on" in line)
    assert "GetStats code=OK" in log
    for secret in (password, API_KEY, hash_key(API_KEY), "wrong-key"):
        assert secret not in log


def test_start_up_errors_hide_the_password(secret_url: tuple[str, str]) -> None:
    url, password = secret_url
    unsupported = url.replace("postgresql://", "mysqlx://", 1)
    # Nothing listens on port 1: the driver's own error, as PostgreSQL being down gives.
    refused = "postgresql://postgres:" + password + "@127.0.0.1:1/sarah"
    for bad in (unsupported, refused):
        done = _sarah_server("--listen", "127.0.0.1:0", "--metrics-listen", "",
                             "--database-url", bad)
        assert done.returncode == 1 and "cannot start" in done.stderr, done.stderr
        assert password not in done.stdout + done.stderr
    assert "unsupported database URL 'mysqlx://postgres:***@" in _sarah_server(
        "migrate", "--database-url", unsupported).stderr


def test_copy_data_summary_and_errors_hide_the_passwords(
        secret_url: tuple[str, str], tmp_path: Path) -> None:
    url, password = secret_url
    source = f"sqlite:///{tmp_path / 'source.db'}"
    assert _sarah_server("migrate", "--database-url", source).returncode == 0
    done = _sarah_server("copy-data", "--source", source, "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert "copied 0 conversations" in done.stdout and ":***@" in done.stdout
    failed = _sarah_server("copy-data", "--source", url.replace("postgresql", "mysqlx", 1),
                           "--database-url", url)
    assert failed.returncode == 1 and "unsupported database URL" in failed.stderr
    for output in (done, failed):
        assert password not in output.stdout + output.stderr


def test_json_log_of_an_unexpected_error_has_its_traceback_and_request_id(
        tmp_path: Path) -> None:
    path = tmp_path / "sarah.db"
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{path}",
                         "--log-format", "json")
    with grpc.insecure_channel(proc.target) as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE), timeout=10)
        # A row damaged behind the server's back: reading it is a bug the log must explain.
        with sqlite3.connect(path) as db:
            db.execute("UPDATE conversation SET pain_points = 'not json'")
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetState(pb.GetStateRequest(contact_phone=PHONE),
                          metadata=(("x-request-id", "req-broken"),), timeout=10)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert "Traceback" not in str(failed.value.details())
    lines = [json.loads(line) for line in proc.stop().splitlines() if line.startswith("{")]
    error = next(line for line in lines if line["message"] == "unexpected error")
    assert error["severity"] == "ERROR" and error["request_id"] == "req-broken"
    assert error["traceback"].startswith("Traceback (most recent call last)")
    assert "JSONDecodeError" in error["traceback"]
    call = next(line for line in lines if line.get("method", "").endswith("/GetState"))
    assert (call["code"], call["request_id"]) == ("INTERNAL", "req-broken")
    assert all(MILLISECONDS.match(line["time"]) for line in lines), lines[0]["time"]


def test_version_is_the_installed_distributions() -> None:
    done = _sarah_server("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"sarah-server {metadata.version('sarah-service')}"
