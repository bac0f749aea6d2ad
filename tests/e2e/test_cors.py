"""CORS through the real Envoy (contract v1.2, "Browsers"): with SARAH_CORS_ORIGINS, a page on
an allowed origin gets its preflight answered on every route and the CORS headers on every
reply, Envoy's own included (429, 415, 413, 404); another origin gets none; the JSON-only 415
rule still holds; envoy.yaml as shipped answers no CORS; and the stack tools read the
setting."""

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.api import annotations_pb2

from deploy import ROOT
from deploy.envoy_config import Config, dump, load, with_cors_origins, with_rate_limit
from harness.envoy import EnvoyProcess, envoy_config
from harness.http_calls import raw_exchange
from harness.ports import free_port
from sarah.v1 import sarah_pb2 as pb
from tests.support.certificates import make_certificates
from tests.support.docs import docs_blocks
from tests.support.helpers import PHONE
from tests.support.servers import serving
from tests.support.stack import MakeRunStack
from tools import cluster, edge_tls

ALLOWED, ALSO_ALLOWED = "https://dashboard.example.com", "http://localhost:5173"
OTHER = "https://attacker.example"
REQUEST_HEADERS = ["x-api-key", "authorization", "content-type", "x-grpc-web", "x-user-agent",
                   "grpc-timeout"]
EXPOSED = ["retry-after", "x-request-id", "grpc-status", "grpc-message",
           "grpc-status-details-bin"]
CALLS_PER_KEY = 2


def _routes() -> list[tuple[str, str]]:
    """(method, path) of every route a browser may call: each RPC's HTTP binding (from the
    proto), each RPC of both services over gRPC-Web, the page at /, and a path nobody serves."""
    routes = [("GET", "/"), ("GET", "/sarah/nope")]
    for service in pb.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            routes.append(("POST", f"/{service.full_name}/{method.name}"))
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb:
                routes.append((verb.upper(), getattr(rule, verb)))
    return routes


@dataclass
class Edge:
    port: int  # Envoy's
    upstream: int = 0  # the server's

    def send(self, method: str, path: str, body: bytes = b"", **headers: str
             ) -> tuple[int, dict[str, str], object]:
        lines = [f"{method} {path} HTTP/1.1", "host: sarah", f"content-length: {len(body)}",
                 *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
        return raw_exchange("127.0.0.1", self.port,
                            ("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def preflight(self, method: str, path: str, origin: str) -> tuple[int, dict[str, str]]:
        status, headers, _ = self.send("OPTIONS", path, origin=origin,
                                       access_control_request_method=method,
                                       access_control_request_headers=",".join(REQUEST_HEADERS))
        return status, headers


def _cors(config: Config) -> Config:
    return with_cors_origins(with_rate_limit(config, CALLS_PER_KEY, seconds=3600),
                             [ALLOWED, ALSO_ALLOWED])


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    workdir = tmp_path_factory.mktemp("cors")
    with serving(f"sqlite:///{workdir / 'sarah.db'}") as server:
        envoy = EnvoyProcess(server.port, workdir, derive=_cors)
        try:
            envoy.wait_healthy(1)
            yield Edge(envoy.port, server.port)
        finally:
            envoy.stop()


def _cors_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items()
            if name.startswith("access-control-")}


def _words(value: str) -> list[str]:
    return [word.strip() for word in value.split(",")]


def _exposes_for(origin: str, headers: dict[str, str]) -> None:
    assert headers.get("access-control-allow-origin") == origin, headers
    assert _words(headers["access-control-expose-headers"]) == EXPOSED, headers


@pytest.mark.parametrize(("method", "path"), _routes(), ids=" ".join)
def test_a_preflight_from_an_allowed_origin_is_answered_on_every_route(
        edge: Edge, method: str, path: str) -> None:
    for origin in (ALLOWED, ALSO_ALLOWED):
        status, headers = edge.preflight(method, path, origin)
        assert status == 200, headers
        assert headers["access-control-allow-origin"] == origin, headers
        assert method in _words(headers["access-control-allow-methods"]), headers
        assert _words(headers["access-control-allow-headers"]) == REQUEST_HEADERS, headers
        assert headers["access-control-max-age"] == "600", headers


def test_requests_from_an_allowed_origin_carry_the_cors_headers(edge: Edge) -> None:
    lead = json.dumps({"contact_phone": PHONE, "workspace_id": "cors", "lead_score": 7}).encode()
    written = edge.send("POST", "/sarah/state", lead, origin=ALLOWED,
                        content_type="application/json")
    read = edge.send("GET", f"/sarah/state?contact_phone=%2B{PHONE[1:]}&workspace_id=cors",
                     origin=ALSO_ALLOWED)
    invalid = edge.send("POST", "/sarah/state", b'{"contact_phone": "0812", "lead_score": 140}',
                        origin=ALLOWED, content_type="application/json")
    erased = edge.send("DELETE", f"/sarah/state?contact_phone=%2B{PHONE[1:]}&workspace_id=cors",
                       origin=ALLOWED)
    grpc_web = edge.send("POST", "/sarah.v1.SarahService/GetStats", b"\0\0\0\0\0",
                         origin=ALLOWED, content_type="application/grpc-web+proto",
                         x_grpc_web="1")
    for (status, headers, body), expected, origin in (
            (written, 200, ALLOWED), (read, 200, ALSO_ALLOWED), (invalid, 400, ALLOWED),
            (erased, 200, ALLOWED), (grpc_web, 200, ALLOWED)):
        assert status == expected, body
        _exposes_for(origin, headers)
    assert isinstance(read[2], dict) and read[2]["lead_score"] == 7, read
    assert erased[2] == {"deleted": True}, erased


def test_another_origin_or_none_gets_no_cors_headers(edge: Edge) -> None:
    for method, path in (("GET", "/sarah/stats"), ("POST", "/sarah/state"),
                         ("POST", "/sarah.v1.SarahService/GetState"), ("GET", "/")):
        status, headers = edge.preflight(method, path, OTHER)
        assert _cors_headers(headers) == {}, (path, status, headers)
    for headers in ({"origin": OTHER}, {"origin": ALLOWED.replace("https", "http")}, {}):
        status, answered, _ = edge.send("GET", "/sarah/stats", **headers)
        assert status == 200 and _cors_headers(answered) == {}, answered


def test_envoys_own_replies_carry_the_cors_headers_for_an_allowed_origin(edge: Edge) -> None:
    key = "a-browser-key"
    for _ in range(CALLS_PER_KEY):
        assert edge.send("GET", "/sarah/stats", origin=ALLOWED, x_api_key=key)[0] == 200
    replies = {
        429: edge.send("GET", "/sarah/stats", origin=ALLOWED, x_api_key=key),
        415: edge.send("POST", "/sarah/state", b'{"contact_phone": "+6281234567890"}',
                       origin=ALLOWED, content_type="text/plain"),
        413: edge.send("POST", "/sarah/state", b"{" + b" " * (2 << 20) + b"}",
                       origin=ALLOWED, content_type="application/json"),
        404: edge.send("GET", "/nothing/here", origin=ALLOWED),
    }
    for status, (answered, headers, body) in replies.items():
        assert answered == status, body
        assert isinstance(body, dict) and {"code", "message"} <= set(body), body
        _exposes_for(ALLOWED, headers)
    assert replies[429][1]["retry-after"] == "3600"
    # A gRPC-Web caller over its limit: gRPC-Web's answer, as readable from the page.
    status, headers, _ = edge.send("POST", "/sarah.v1.SarahService/GetStats", b"\0\0\0\0\0",
                                   origin=ALLOWED, content_type="application/grpc-web+proto",
                                   x_api_key=key)
    assert (status, headers["grpc-status"], headers["retry-after"]) == (429, "14", "3600")
    _exposes_for(ALLOWED, headers)
    for status in (415, 404):  # from another origin: the same reply, without CORS
        path, method, content_type = {415: ("/sarah/state", "POST", "text/plain"),
                                      404: ("/nothing/here", "GET", "application/json")}[status]
        answered, headers, _ = edge.send(method, path, b"{}", origin=OTHER,
                                         content_type=content_type)
        assert answered == status and _cors_headers(headers) == {}, headers


def test_the_json_only_rule_still_refuses_a_simple_cross_site_post(edge: Edge) -> None:
    """A page may send a text/plain POST without a preflight: refused, and nothing written,
    whichever its origin."""
    body = json.dumps({"contact_phone": "+6281200001111", "workspace_id": "simple"}).encode()
    for origin in (ALLOWED, OTHER):
        status, _, _ = edge.send("POST", "/sarah/state", body, origin=origin,
                                 content_type="text/plain;charset=UTF-8")
        assert status == 415
    _, _, stats = edge.send("GET", "/sarah/stats?workspace_id=simple")
    assert isinstance(stats, dict) and stats["total"] == 0, stats


def test_envoy_yaml_as_shipped_answers_no_cors(tmp_path: Path, edge: Edge) -> None:
    shipped = EnvoyProcess(edge.upstream, tmp_path, name="envoy-shipped")
    try:
        shipped.wait_healthy(1)
        plain = Edge(shipped.port)
        for method, path in (("GET", "/sarah/stats"), ("POST", "/sarah.v1.SarahService/GetState")):
            _, headers = plain.preflight(method, path, ALLOWED)
            assert _cors_headers(headers) == {}, headers
        status, headers, _ = plain.send("GET", "/sarah/stats", origin=ALLOWED)
        assert status == 200 and _cors_headers(headers) == {}, headers
    finally:
        shipped.stop()


def test_make_run_allows_the_origins_of_sarah_cors_origins(tmp_path: Path) -> None:
    """The README's `SARAH_CORS_ORIGINS=... make run`, with a second origin spelt loosely."""
    [block] = docs_blocks("README.md", "From a browser, or TypeScript", "sh")
    [line] = [line for line in block.splitlines() if "make run" in line]
    assignment, make_run = line.split(" #")[0].strip().split(" ", 1)
    name, readme_origin = assignment.split("=")
    assert (name, make_run, readme_origin) == ("SARAH_CORS_ORIGINS", "make run", ALLOWED)
    http, admin, grpc_port = free_port(), free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(envoy_config(http, admin, grpc_port))
    stack = MakeRunStack(tmp_path, config, grpc_port=grpc_port, http_port=http,
                         admin_port=admin,
                         env={name: f"{readme_origin}, HTTP://LOCALHOST:5173/"})
    try:
        running = Edge(stack.port)
        for origin in (ALLOWED, ALSO_ALLOWED):
            status, headers = running.preflight("POST", "/sarah/state", origin)
            assert status == 200 and headers["access-control-allow-origin"] == origin, headers
        assert _cors_headers(running.preflight("POST", "/sarah/state", OTHER)[1]) == {}
    finally:
        stack.stop()


@pytest.mark.parametrize("tool", [["tools.stack"], ["tools.cluster"],
                                  ["tools.edge_tls", "config"]])
def test_each_stack_tool_refuses_a_value_that_is_no_origin(tool: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *tool], cwd=ROOT, capture_output=True,
                          text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "SARAH_CORS_ORIGINS": "dashboard.example"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "SARAH_CORS_ORIGINS: 'dashboard.example' is not an origin" in done.stderr


def test_edge_tls_config_and_the_cluster_config_allow_the_configured_origins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARAH_CORS_ORIGINS", ALLOWED)
    _, cert, key = make_certificates(tmp_path)
    edge_tls.install(tmp_path / "tls", cert.read_bytes(), key.read_bytes())
    out = tmp_path / "envoy-tls.yaml"
    assert edge_tls.main(["config", "--dir", str(tmp_path / "tls"), "--out", str(out)]) == 0
    assert f"exact: {ALLOWED}" in out.read_text()
    assert f"exact: {ALLOWED}" in dump(cluster.envoy_config([50051, 50052]))
    assert f"exact: {ALLOWED}" not in dump(load())
