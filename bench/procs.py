"""What the bench measures, as child processes on free loopback ports, and their memory."""

import argparse
import http.client
import logging
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.memory import tree_rss

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ENVOY = str(Path(sys.executable).parent / "envoy")
_START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A child process in its own session, its output in `workdir/<name>.log`."""

    def __init__(self, name: str, argv: list[str], workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{tail}")

    def rss_bytes(self) -> int:
        """Resident memory of the process and every descendant (worker processes too)."""
        return tree_rss(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_ports(n: int) -> list[int]:
    """`n` consecutive free ports (a server with --workers n listens on port + i)."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base + 1, base + n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return list(range(base, base + n))
    raise RuntimeError(f"found no {n} consecutive free ports")


class GrpcServer(Child):
    """A gRPC server (the real one or the bare one) on one port or, with worker processes,
    on several; ready once every port's health check says SERVING."""

    def __init__(self, name: str, argv: list[str], ports: list[int], workdir: Path):
        super().__init__(name, argv, workdir)
        self.ports = ports
        self.port, self.target = ports[0], f"127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + _START_TIMEOUT_S
        for port in ports:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while not self._serving(stub):
                    self.check_alive()
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"{name} did not become healthy on port {port}")
                    time.sleep(0.1)

    @staticmethod
    def _serving(stub: health_pb2_grpc.HealthStub) -> bool:
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _workers(server_args: list[str]) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workers", type=int, default=1)
    return parser.parse_known_args(server_args)[0].workers


def real_server(db: Path, workdir: Path, server_args: list[str], name: str = "server"
                ) -> GrpcServer:
    """`python -m server`, as an operator starts it, on free ports over `db`; with
    `--workers N` among `server_args`, worker i on the first port + i."""
    ports = free_ports(_workers(server_args))
    argv = [sys.executable, "-m", "server", "--listen", f"127.0.0.1:{ports[0]}",
            "--database-url", f"sqlite:///{db}",
            # Metrics stay on, as in production, on a free port rather than the default.
            "--metrics-listen", "127.0.0.1:0", *server_args]
    return GrpcServer(name, argv, ports, workdir)


def bare_server(responses: Path, workdir: Path, threads: int) -> GrpcServer:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_server", "--listen", f"127.0.0.1:{port}",
            "--responses", str(responses), "--threads", str(threads)]
    return GrpcServer("bare", argv, [port], workdir)


def envoy_config(http_port: int, admin_port: int, upstream_ports: list[int]) -> str:
    """envoy.yaml with its ports moved, the descriptor path made absolute and, for several
    upstream processes, each listed as an endpoint of the cluster so Envoy balances
    requests over them (one shared port would balance connections only)."""
    text = (ROOT / "envoy.yaml").read_text()
    for old, new in ((8080, http_port), (9901, admin_port), (50051, upstream_ports[0])):
        if text.count(f"port_value: {old}") != 1:
            raise RuntimeError(f"envoy.yaml must name port {old} exactly once")
        text = text.replace(f"port_value: {old}", f"port_value: {new}")
    text = text.replace("sarah/v1/sarah.pb", str(ROOT / "sarah" / "v1" / "sarah.pb"))
    if len(upstream_ports) == 1:
        return text
    config = yaml.safe_load(text)
    cluster = next(c for c in config["static_resources"]["clusters"]
                   if c["name"] == "sarah_grpc")
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in upstream_ports]}]
    return yaml.safe_dump(config, sort_keys=False)


class Envoy(Child):
    """envoy.yaml in front of `upstream`, ready once its health check found every upstream
    process healthy."""

    def __init__(self, name: str, upstream: GrpcServer, workdir: Path, concurrency: int):
        self.port, self.admin_port = free_port(), free_port()
        self.upstreams = len(upstream.ports)
        config = workdir / f"{name}.yaml"
        config.write_text(envoy_config(self.port, self.admin_port, upstream.ports))
        argv = [ENVOY, "-c", str(config), "--base-id", str(random.randrange(1, 1 << 30)),
                "--disable-hot-restart", "--log-level", "warn",
                "--concurrency", str(concurrency)]
        super().__init__(name, argv, workdir)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._upstream_healthy():
            self.check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} never found its upstream healthy")
            time.sleep(0.2)

    def _upstream_healthy(self) -> bool:
        # The panic threshold is 0: until the first health check passes, Envoy sends nothing.
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=2)
            conn.request("GET", "/clusters")
            body = conn.getresponse().read().decode()
            conn.close()
        except OSError:
            return False
        return body.count("health_flags::healthy") >= self.upstreams
