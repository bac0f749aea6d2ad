"""How callers reach the server: TLS with a private CA from the client and the `sarah` CLI,
the token never in plaintext beyond loopback, caller interceptors and channel options, the
default deadline from SARAH_TIMEOUT, and one version number from the CLI and every
response."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from client import VERSION, AsyncSarahClient, PlaintextTokenRefused, SarahClient
from client.cli import cli
from deploy import ROOT
from sarah.v1 import sarah_pb2 as pb
from server.api.interceptors import VERSION_HEADER
from server.app import RunningServer
from tests.support.certificates import make_certificates
from tests.support.helpers import PHONE
from tests.support.servers import serving

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_server(tmp_path: Path, certs: tuple[Path, Path, Path]) -> Iterator[RunningServer]:
    _, cert, key = certs
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with serving(f"sqlite:///{tmp_path / 'sarah.db'}", credentials=credentials) as server:
        yield server


def _sarah(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m client ...` in a child process, as a user types it."""
    return subprocess.run([sys.executable, "-m", "client", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


def test_cli_reaches_a_tls_server_with_the_ca_file(tls_server: RunningServer,
                                                   certs: tuple[Path, Path, Path]) -> None:
    ca, _, _ = certs
    target = f"localhost:{tls_server.port}"
    stored = _sarah("upsert", PHONE, "--score", "45", "--json", "--target", target, "--tls",
                    "--ca-file", str(ca))
    assert stored.returncode == 0, stored.stderr
    # The same from the environment, as a deployment sets it; --ca-file alone implies TLS.
    got = _sarah("get", PHONE, "--json", SARAH_TARGET=f"127.0.0.1:{tls_server.port}",
                 SARAH_CA_FILE=str(ca))
    assert got.returncode == 0, got.stderr
    assert '"lead_score": 45' in got.stdout


def test_cli_without_the_ca_says_the_handshake_failed(tls_server: RunningServer) -> None:
    # 127.0.0.1, not localhost: grpc reports the last address's error, and localhost's ::1
    # (where nothing listens) would say "connection refused" instead.
    failed = _sarah("get", PHONE, "--target", f"127.0.0.1:{tls_server.port}", SARAH_TLS="1")
    assert failed.returncode == 1
    assert failed.stderr.startswith("Error: UNAVAILABLE")
    assert "pass --ca-file with the CA that signed the server's certificate" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_client_with_ssl_credentials_calls_a_tls_server(tls_server: RunningServer,
                                                        certs: tuple[Path, Path, Path]) -> None:
    ca, _, _ = certs
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    with SarahClient(f"localhost:{tls_server.port}", credentials=credentials,
                     token="not-checked-here") as sarah:
        assert sarah.upsert_state(contact_phone=PHONE, lead_score=7).lead_score == 7


@pytest.mark.parametrize("target", ["10.0.0.5:50051", "sarah.example.com:443",
                                    "dns:///sarah.example.com:443", "[2001:db8::1]:443"])
def test_a_token_is_not_sent_in_plaintext_beyond_loopback(target: str) -> None:
    with pytest.raises(PlaintextTokenRefused, match="refusing to send the token in plaintext"):
        SarahClient(target, token="s3cret")
    with pytest.raises(PlaintextTokenRefused):
        asyncio.run(_open_async(target))
    refused = CliRunner().invoke(cli, ["get", PHONE, "--target", target, "--token", "s3cret"])
    assert refused.exit_code == 2
    assert "refusing to send the token in plaintext to " + target in refused.output
    assert "--tls" in refused.output
    # Told explicitly, or over TLS, the client is made (no call is attempted here).
    SarahClient(target, token="s3cret", allow_plaintext_token=True).close()
    SarahClient(target, token="s3cret", credentials=grpc.ssl_channel_credentials()).close()


async def _open_async(target: str) -> None:
    await AsyncSarahClient(target, token="s3cret").close()


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "localhost:50051", "[::1]:50051",
                                    "ipv4:127.0.0.2:50051", "unix:/tmp/sarah.sock"])
def test_a_token_may_go_in_plaintext_to_loopback(target: str) -> None:
    SarahClient(target, token="s3cret").close()


class _Recorder(grpc.UnaryUnaryClientInterceptor):
    """Notes each call's method and the version header its response carried."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                              request: Any) -> Any:
        outcome = continuation(details, request)
        version = dict(outcome.trailing_metadata() or ()).get(VERSION_HEADER)
        self.seen.append((details.method, version))
        return outcome


def test_interceptors_see_every_call_and_its_version_header(
        sqlite_server: RunningServer) -> None:
    recorder = _Recorder()
    with SarahClient(f"127.0.0.1:{sqlite_server.port}", interceptors=[recorder]) as sarah:
        sarah.upsert_state(contact_phone=PHONE, lead_score=3)
        assert sarah.get_state(contact_phone=PHONE).lead_score == 3
    assert recorder.seen == [("/sarah.v1.SarahService/UpsertState", VERSION),
                             ("/sarah.v1.SarahService/GetState", VERSION)]


class _AsyncRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any,
                                    request: Any) -> Any:
        self.methods.append(details.method.decode())  # grpc.aio passes bytes here
        return await continuation(details, request)


def test_async_interceptors_see_every_call(sqlite_server: RunningServer) -> None:
    recorder = _AsyncRecorder()

    async def scenario() -> int:
        async with AsyncSarahClient(f"127.0.0.1:{sqlite_server.port}",
                                    interceptors=[recorder]) as sarah:
            await sarah.upsert_state(contact_phone=PHONE)
            return (await sarah.get_stats()).total

    assert asyncio.run(scenario()) == 1
    assert recorder.methods == ["/sarah.v1.SarahService/UpsertState",
                                "/sarah.v1.SarahService/GetStats"]


def test_channel_options_are_applied(sqlite_server: RunningServer) -> None:
    target = f"127.0.0.1:{sqlite_server.port}"
    with SarahClient(target) as sarah:
        sarah.upsert_state(contact_phone=PHONE, extracted_data=pb.ExtractedData(goals="g" * 400))
    # A conversation with 400 characters of goals is more than 300 bytes on the wire.
    with (SarahClient(target, options=[("grpc.max_receive_message_length", 300)]) as small,
          pytest.raises(grpc.RpcError) as raised):
        small.get_state(contact_phone=PHONE)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with SarahClient(target, options=[("grpc.max_receive_message_length", 4096)]) as enough:
        assert enough.get_state(contact_phone=PHONE).extracted_data.goals == "g" * 400


def test_sarah_timeout_sets_the_default_deadline(sqlite_server: RunningServer) -> None:
    target = f"127.0.0.1:{sqlite_server.port}"
    # A microsecond cannot be met by any call: the deadline, not the server, ends it.
    late = _sarah("stats", SARAH_TARGET=target, SARAH_TIMEOUT="0.000001")
    assert late.returncode == 1 and late.stderr.startswith("Error: DEADLINE_EXCEEDED")
    assert _sarah("stats", SARAH_TARGET=target, SARAH_TIMEOUT="30").returncode == 0
    bad = _sarah("stats", SARAH_TARGET=target, SARAH_TIMEOUT="soon")
    assert bad.returncode == 2 and "--timeout" in bad.stderr and "Traceback" not in bad.stderr


def test_the_cli_and_the_server_report_one_version(sqlite_server: RunningServer) -> None:
    assert _sarah("--version").stdout == f"sarah {VERSION}\n"
    # grpcurl finds the method by reflection and shows the response's trailers.
    shown = subprocess.run(
        [GRPCURL, "-plaintext", "-v", f"127.0.0.1:{sqlite_server.port}",
         "sarah.v1.SarahService/GetStats"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert f"{VERSION_HEADER}: {VERSION}" in shown.stdout
