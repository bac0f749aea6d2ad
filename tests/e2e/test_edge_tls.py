"""TLS at the edge: `python -m tools.edge_tls` installs a certificate and derives a TLS Envoy
config from envoy.yaml; HTTPS and gRPC over TLS work through it, plaintext does not, a
renewed certificate is served without a restart and without a failed call, and the
commands of docs/operations.md's "TLS at the edge" run."""

import http.client
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509

from client import SarahClient
from deploy import ROOT
from deploy.envoy_config import TLS_SECRET, dump, load, sds_secret, with_tls
from harness.envoy import envoy_config
from harness.http_calls import https_connection, https_get, request
from harness.ports import free_port
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.docs import docs_blocks
from tests.support.helpers import KAPSO_BODY, PHONE
from tests.support.stack import MakeRunStack
from tools import certificates

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _envoy_ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def _edge_tls(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.edge_tls", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def authority() -> certificates.Authority:
    return certificates.new_authority()


def _write_pair(folder: Path, authority: certificates.Authority) -> tuple[Path, Path, int]:
    """A new certificate for localhost and 127.0.0.1 as files: (chain, key, serial)."""
    issued = certificates.issue(authority, ["localhost", "127.0.0.1"])
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{issued.serial:x}.crt", folder / f"{issued.serial:x}.key"
    cert.write_bytes(issued.chain_pem)
    key.write_bytes(issued.key_pem)
    return cert, key, issued.serial


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory,
          authority: certificates.Authority) -> tuple[Path, Path, Path]:
    """(the CA's certificate, the folder Envoy reads its certificate from, the first serial
    installed there as a file)."""
    folder = tmp_path_factory.mktemp("certs")
    ca = folder / "ca.crt"
    ca.write_bytes(certificates.certificate_pem(authority))
    cert, key, serial = _write_pair(folder / "issued", authority)
    done = _edge_tls("install", "--dir", folder / "tls", "--cert", cert, "--key", key)
    assert done.returncode == 0, done.stderr
    assert f"serial {serial:x}" in done.stdout
    return ca, folder / "tls", folder / "issued"


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory,
              certs: tuple[Path, Path, Path]) -> Iterator[MakeRunStack]:
    workdir = tmp_path_factory.mktemp("edge-tls")
    https_port, admin_port, grpc_port = _envoy_ports()
    base = workdir / "envoy.yaml"
    base.write_text(envoy_config(https_port, admin_port, grpc_port))
    out = workdir / "envoy-tls.yaml"
    done = _edge_tls("config", "--dir", certs[1], "--base", base, "--out", out)
    assert done.returncode == 0, done.stderr
    stack = MakeRunStack(workdir, out, grpc_port=grpc_port, http_port=https_port,
                         admin_port=admin_port)
    yield stack
    assert "Traceback" not in stack.stop()


def _https(port: int, ca: Path, method: str, path: str,
           body: object = None) -> tuple[int, object]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("localhost", port, timeout=20, context=context)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_tls_config_adds_tls_to_the_listener_and_keeps_the_rest() -> None:
    original = load()
    derived = yaml.safe_load(dump(with_tls(original, "/srv/sarah/tls/sds.yaml")))
    (listener,) = derived["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    tls = chain.pop("transport_socket")["typed_config"]
    assert tls["@type"].endswith("DownstreamTlsContext")
    common = tls["common_tls_context"]
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_params"] == {"tls_minimum_protocol_version": "TLSv1_2"}
    assert common["tls_certificate_sds_secret_configs"] == [{
        "name": TLS_SECRET,
        "sds_config": {"path_config_source": {"path": "/srv/sarah/tls/sds.yaml"},
                       "resource_api_version": "V3"},
    }]
    assert derived.pop("node") == {"id": "sarah-edge", "cluster": "sarah-edge"}, "SDS needs one"
    assert derived == original, "only the transport socket and the node may differ"
    moved = yaml.safe_load(dump(with_tls(original, "s", listen="0.0.0.0:443")))
    address = moved["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert address == {"address": "0.0.0.0", "port_value": 443}
    assert moved["admin"] == original["admin"], "admin stays on loopback"


def test_the_sds_file_names_the_live_pair_and_watches_its_folder() -> None:
    (secret,) = sds_secret("/srv/sarah/tls")["resources"]
    assert secret["name"] == TLS_SECRET
    assert secret["tls_certificate"] == {
        "certificate_chain": {"filename": "/srv/sarah/tls/live/tls.crt"},
        "private_key": {"filename": "/srv/sarah/tls/live/tls.key"},
        "watched_directory": {"path": "/srv/sarah/tls"},
    }


def test_install_refuses_a_missing_file_or_a_pair_that_does_not_match(
        tmp_path: Path, authority: certificates.Authority) -> None:
    done = _edge_tls("install", "--dir", tmp_path / "tls", "--cert", tmp_path / "none.crt",
                     "--key", tmp_path / "none.key")
    assert done.returncode == 2 and "no such file" in done.stderr
    cert, _, _ = _write_pair(tmp_path / "a", authority)
    _, other_key, _ = _write_pair(tmp_path / "b", authority)
    done = _edge_tls("install", "--dir", tmp_path / "tls", "--cert", cert, "--key", other_key)
    assert done.returncode == 2 and "the key is not the first certificate's" in done.stderr
    assert not (tmp_path / "tls" / "live").exists(), "nothing was installed"
    done = _edge_tls("config", "--dir", tmp_path / "tls", "--out", tmp_path / "out.yaml")
    assert done.returncode == 2 and "no certificate installed yet" in done.stderr
    assert not (tmp_path / "out.yaml").exists()


def test_https_post_and_get_state(tls_stack: MakeRunStack, certs: tuple[Path, Path, Path]) -> None:
    ca = certs[0]
    status, stored = _https(tls_stack.port, ca, "POST", "/sarah/state",
                            {**KAPSO_BODY, "workspace_id": "tls-http"})
    assert status == 200, stored
    assert isinstance(stored, dict) and stored["lead_temperature"] == "warm"
    status, read = _https(tls_stack.port, ca, "GET",
                          "/sarah/state?contact_phone=%2B6281234567890&workspace_id=tls-http")
    assert status == 200 and isinstance(read, dict)
    assert read["lead_score"] == 45 and read["extracted_data"]["name"] == "Budi"


def test_the_dashboard_page_is_served_over_https(tls_stack: MakeRunStack,
                                                 certs: tuple[Path, Path, Path]) -> None:
    conn = https_connection(tls_stack.port, certs[0])
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type") == "text/html; charset=utf-8"
        assert response.read() == (ROOT / "dashboard" / "index.html").read_bytes()
    finally:
        conn.close()


def test_grpc_over_tls_with_a_secure_channel_and_the_client_library(
        tls_stack: MakeRunStack, certs: tuple[Path, Path, Path]) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs[0].read_bytes())
    target = f"localhost:{tls_stack.port}"
    with grpc.secure_channel(target, credentials) as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stored = stub.UpsertState(pb.UpsertStateRequest(
            contact_phone=PHONE, workspace_id="tls-grpc", lead_score=71), timeout=10)
        assert stored.lead_score == 71
    with SarahClient(f"127.0.0.1:{tls_stack.port}", credentials=credentials) as sarah:
        lead = sarah.get_state(contact_phone="0812-3456-7890", workspace_id="tls-grpc")
        assert lead.lead_score == 71
        assert sarah.get_stats(workspace_id="tls-grpc").total == 1


def test_alpn_offers_h2_and_http11_at_tls_12_or_newer(
        tls_stack: MakeRunStack, certs: tuple[Path, Path, Path]) -> None:
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        context = ssl.create_default_context(cafile=str(certs[0]))
        context.set_alpn_protocols(offered)
        with socket.create_connection(("127.0.0.1", tls_stack.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == chosen
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # A client that offers TLS 1.1 at most is turned away by Envoy with a protocol_version
    # alert (SECLEVEL=0 lets this OpenSSL offer 1.1 at all).
    old = ssl.create_default_context(cafile=str(certs[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", tls_stack.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLError, match="(?i)protocol.version"):
        old.wrap_socket(raw, server_hostname="localhost")


def test_plaintext_to_the_tls_port_fails(tls_stack: MakeRunStack) -> None:
    with pytest.raises((OSError, http.client.HTTPException)):
        request("127.0.0.1", tls_stack.port, "GET", "/sarah/stats")
    with grpc.insecure_channel(f"127.0.0.1:{tls_stack.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetStats(pb.GetStatsRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def _served_serial(port: int, ca: Path,
                   conn: http.client.HTTPSConnection | None = None) -> int:
    """One GET /sarah/stats over HTTPS (on `conn`, kept open, or a new connection) that must
    succeed; the serial of the certificate the connection was served."""
    own = conn or https_connection(port, ca)
    try:
        status, body, serial = https_get(own, "/sarah/stats")
        assert status == 200 and isinstance(body, dict) and "total" in body, body
        return serial
    finally:
        if conn is None:
            own.close()


def test_a_renewed_certificate_is_served_without_a_restart_or_a_failed_call(
        tls_stack: MakeRunStack, certs: tuple[Path, Path, Path],
        authority: certificates.Authority) -> None:
    """While two clients keep calling (one opens a connection per call, one keeps its
    connection), `install` puts a renewed certificate in place: no call fails, the kept
    connection goes on, and new connections get the new serial, from the same Envoy."""
    ca, folder, issued = certs
    first = _served_serial(tls_stack.port, ca)
    seen: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    kept = https_connection(tls_stack.port, ca)

    def keep_calling(on: http.client.HTTPSConnection | None) -> None:
        while not stop.is_set():
            try:
                serial = _served_serial(tls_stack.port, ca, on)
            except BaseException as failed:  # noqa: BLE001 -- every failure is reported
                failures.append(failed)
                return
            if on is None:
                seen.append(serial)

    callers = [threading.Thread(target=keep_calling, args=(on,)) for on in (None, kept)]
    for caller in callers:
        caller.start()
    try:
        wait_until(lambda: len(seen) >= 3 or failures, 30, "calls before the renewal")
        cert, key, renewed = _write_pair(issued, authority)
        assert renewed != first
        done = _edge_tls("install", "--dir", folder, "--cert", cert, "--key", key)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: seen.count(renewed) >= 3 or failures, 30,
                   "new connections to be served the renewed certificate")
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=60)
    assert not failures, failures
    assert seen[0] == first and seen[-1] == renewed, "old serial first, then only the new one"
    assert seen.index(renewed) > 0 and set(seen[seen.index(renewed):]) == {renewed}
    assert _served_serial(tls_stack.port, ca, kept) == first, "the open connection kept its"
    kept.close()
    assert tls_stack.proc.poll() is None, "the same Envoy, never restarted"
    versions = sorted(p.name for p in (folder / "versions").iterdir())
    assert (folder / "live").resolve().name == versions[-1]


def _documented_tls_commands() -> list[str]:
    """The shell lines of docs/operations.md's "TLS at the edge" code blocks."""
    blocks = docs_blocks("docs/operations.md", "TLS at the edge", "sh")
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_documented_tls_commands_work(tmp_path: Path) -> None:
    """Each line of the docs, run as written in an empty folder (no data/ yet, as in a fresh
    clone), with its ports moved to free ones; the renewal is served by the same Envoy."""
    commands = _documented_tls_commands()
    https_port, admin_port, grpc_port = _envoy_ports()
    base = tmp_path / "envoy.yaml"
    base.write_text(envoy_config(8443, admin_port, grpc_port))
    started: MakeRunStack | None = None
    checked, served = 0, set()
    try:
        for command in commands:
            argv = shlex.split(command.replace(":8443", f":{https_port}"), comments=True)
            if argv[0] == ".venv/bin/python":
                argv = [sys.executable, *argv[1:], *(["--base", str(base)]
                                                     if "config" in argv else [])]
            if argv[0].startswith("SARAH_ENVOY_CONFIG="):
                assert argv[1:] == ["make", "run"], command
                started = MakeRunStack(tmp_path, tmp_path / argv[0].split("=", 1)[1],
                                       grpc_port=grpc_port, http_port=https_port,
                                       admin_port=admin_port)
                continue
            if argv[0] == ".venv/bin/grpcurl":
                argv[0] = GRPCURL
            # The documented commands run from the checkout, where `-m tools...` is found;
            # here they run in tmp_path, so the checkout goes on the path instead.
            done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if argv[0] in ("curl", GRPCURL):
                assert started is not None, f"{command} runs before the stack starts"
                assert '"total"' in done.stdout or "sarah.v1.SarahService" in done.stdout, (
                    command, done.stdout)
                checked += 1
                ca = tmp_path / "data" / "tls" / "throwaway-ca" / "ca.crt"
                served.add(_served_serial(https_port, ca))
    finally:
        if started is not None:
            started.stop()
    assert started is not None and checked >= 3, commands
    assert len(served) == 2, "the renewed certificate was served without a restart"
    live = x509.load_pem_x509_certificate((tmp_path / "data/tls/live/tls.crt").read_bytes())
    assert live.serial_number in served
