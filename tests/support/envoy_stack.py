"""The real Envoy in front of a real server, on free loopback ports, for end-to-end tests."""

import http.client
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.helpers import ROOT
from tools.cluster import cluster_envoy_config

ENVOY = str(Path(sys.executable).parent / "envoy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def envoy_config(http_port: int, admin_port: int, upstream_port: int) -> str:
    """envoy.yaml with its three ports moved and the descriptor path made absolute."""
    text = (ROOT / "envoy.yaml").read_text()
    for old, new in ((8080, http_port), (9901, admin_port), (50051, upstream_port)):
        assert text.count(f"port_value: {old}") == 1, f"envoy.yaml must name port {old} once"
        text = text.replace(f"port_value: {old}", f"port_value: {new}")
    return text.replace("sarah/v1/sarah.pb", str(ROOT / "sarah" / "v1" / "sarah.pb"))


class EnvoyProcess:
    """Envoy started from envoy.yaml on free ports, forwarding to `upstream_port`."""

    def __init__(self, upstream_port: int, workdir: Path, replica_ports: list[int] | None = None):
        self.port = free_port()
        self.admin_port = free_port()
        config = workdir / "envoy.yaml"
        text = envoy_config(self.port, self.admin_port, upstream_port)
        if replica_ports:
            text = cluster_envoy_config(text, replica_ports)
        config.write_text(text)
        self.log = open(workdir / "envoy.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [ENVOY, "-c", str(config), "--base-id", str(random.randrange(1, 1 << 30)),
             "--disable-hot-restart", "--log-level", "warn", "--concurrency", "1"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited {self.proc.returncode}")
            try:
                status, _, _ = request("127.0.0.1", self.admin_port, "GET", "/ready")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("envoy did not become ready")

    def stat(self, name: str) -> int:
        """One of Envoy's counters or gauges, from its admin port."""
        _, _, text = request("127.0.0.1", self.admin_port, "GET", f"/stats?filter=^{name}$")
        return int(str(text).rsplit(":", 1)[1]) if text else 0

    def call(self, method: str, path: str, body: object = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
        return request("127.0.0.1", self.port, method, path, body, headers)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def request(host: str, port: int, method: str, path: str, body: object = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    """One HTTP/1.1 request with the path sent exactly as given; the body parsed as JSON."""
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        sent = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        try:
            parsed: object = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, reply_headers, parsed
    finally:
        conn.close()


def start_stack(workdir: Path, envoy_yaml: Path, grpc_port: int) -> subprocess.Popen:
    """`python -m tools.stack` as `make run` starts it, with Envoy reading `envoy_yaml`
    and the server on `grpc_port` over a SQLite file in `workdir`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tools.stack", "--listen", f"127.0.0.1:{grpc_port}",
         "--database-url", f"sqlite:///{workdir / 'sarah.db'}"],
        # Its own metrics port: other servers may hold the default one.
        cwd=ROOT, env={"SARAH_ENVOY_CONFIG": str(envoy_yaml), "PATH": "/usr/bin:/bin",
                       "SARAH_METRICS_LISTEN": "127.0.0.1:0"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
