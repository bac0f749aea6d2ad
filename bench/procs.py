"""What the bench measures, as child processes on free loopback ports: the real server,
the bare one, and Envoy in front of either (the harness of tests/support, in the bench's
sizes)."""

import functools
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import parse_args
from tests.support.envoy import EnvoyProcess
from tests.support.ports import free_port, free_ports
from tests.support.processes import LoggedProcess
from tests.support.waiting import wait_until

_START_TIMEOUT_S = 60


class GrpcServer(LoggedProcess):
    """A gRPC server (the real one or the bare one) on one port or, with worker processes,
    on several; ready once every port's health check says SERVING."""

    def __init__(self, name: str, argv: list[str], ports: list[int], workdir: Path):
        # Its own session: a Ctrl-C at the terminal reaches the bench, which stops it.
        super().__init__(name, argv, workdir, own_session=True)
        self.ports = ports
        self.port, self.target = ports[0], f"127.0.0.1:{ports[0]}"
        try:
            for port in ports:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    wait_until(functools.partial(self._serving, stub), _START_TIMEOUT_S,
                               f"{name} to be healthy on port {port}")
        except BaseException:
            self.stop()
            raise

    def _serving(self, stub: health_pb2_grpc.HealthStub) -> bool:
        self.check_alive()
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _workers(server_args: list[str]) -> int:
    """How many worker processes the server starts with these flags, read as the server
    reads them (its environment, `auto`, the default)."""
    return parse_args(server_args).workers


def real_server(db: Path, workdir: Path, server_args: list[str], name: str = "server"
                ) -> GrpcServer:
    """`python -m server`, as an operator starts it, on free ports over `db`; with
    `--workers N` among `server_args`, worker i on the first port + i."""
    return server_on(f"sqlite:///{db}", workdir, server_args, name)


def server_on(database_url: str, workdir: Path, server_args: list[str], name: str
              ) -> GrpcServer:
    """`python -m server` over any database (a PostgreSQL replica among several)."""
    ports = free_ports(_workers(server_args))
    argv = [sys.executable, "-m", "server", "--listen", f"127.0.0.1:{ports[0]}",
            "--database-url", database_url,
            # Metrics stay on, as in production, on a free port rather than the default.
            "--metrics-listen", "127.0.0.1:0", *server_args]
    return GrpcServer(name, argv, ports, workdir)


def bare_server(responses: Path, workdir: Path, threads: int) -> GrpcServer:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_server", "--listen", f"127.0.0.1:{port}",
            "--responses", str(responses), "--threads", str(threads)]
    return GrpcServer("bare", argv, [port], workdir)


def envoy_in_front(upstream: GrpcServer, name: str, workdir: Path, concurrency: int
                   ) -> EnvoyProcess:
    """envoy.yaml in front of `upstream`, each of its processes an endpoint of its own so
    that Envoy balances requests over them; ready once the health check found all."""
    envoy = EnvoyProcess(upstream.ports, workdir, name=name, concurrency=concurrency,
                         own_session=True)
    try:
        envoy.wait_healthy(len(upstream.ports), timeout=_START_TIMEOUT_S)
    except BaseException:
        envoy.stop()
        raise
    return envoy
