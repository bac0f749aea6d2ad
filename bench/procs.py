"""What the bench measures, as child processes on free loopback ports: the real server,
the bare one, and Envoy in front of either (the harness of tests/support, in the bench's
sizes)."""

import contextlib
import functools
import io
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.envoy import EnvoyProcess
from harness.http_calls import request
from harness.ports import free_port, free_ports
from harness.processes import LoggedProcess
from harness.waiting import wait_until
from server.config import parse_args

_START_TIMEOUT_S = 60


class GrpcServer(LoggedProcess):
    """A gRPC server (the real one or the bare one) on one port or, with worker processes,
    on several; ready once every port's health check says SERVING."""

    def __init__(self, name: str, argv: list[str], ports: list[int], workdir: Path):
        # Its own session: a Ctrl-C at the terminal reaches the bench, which stops it.
        super().__init__(name, argv, workdir, own_session=True)
        self.ports = ports
        self.port, self.target = ports[0], f"127.0.0.1:{ports[0]}"
        with self.stopped_on_failure():
            for port in ports:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = health_pb2_grpc.HealthStub(channel)
                    wait_until(functools.partial(self._serving, stub), _START_TIMEOUT_S,
                               f"{name} to be healthy on port {port}")

    def _serving(self, stub: health_pb2_grpc.HealthStub) -> bool:
        self.check_alive()
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def server_processes(server_args: list[str]) -> int:
    """How many processes `python -m server *server_args` runs, read by the server's own
    parser (its default, SARAH_WORKERS, `auto` if it takes that), so the bench gives it as
    many ports and the ceilings as many processes."""
    config = parse_args(["--listen", "127.0.0.1:1", *server_args])
    return config.worker_count


def accepts(server_args: list[str]) -> bool:
    """Whether the server's parser takes these flags (`--workers auto` on an older one
    does not)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parse_args(["--listen", "127.0.0.1:1", *server_args])
    except SystemExit:
        return False
    return True


def real_server(db: Path, workdir: Path, server_args: list[str], name: str = "server"
                ) -> GrpcServer:
    """`python -m server`, as an operator starts it, on free ports over `db`; with
    `--workers N` among `server_args`, worker i on the first port + i."""
    return server_on(f"sqlite:///{db}", workdir, server_args, name)


def server_on(database_url: str, workdir: Path, server_args: list[str], name: str
              ) -> GrpcServer:
    """`python -m server` over any database (a PostgreSQL replica among several)."""
    ports = free_ports(server_processes(server_args))
    # SARAH_BENCH_SERVER_PATH: a folder holding another checkout's server/ to measure (the
    # before of a before/after), the bench and everything else from this one. The server
    # and its workers run from there: `python -m` puts the working folder first on the path.
    other = os.environ.get("SARAH_BENCH_SERVER_PATH")
    prefix = ["sh", "-c", f'cd "{other}" && exec "$@"', "sh"] if other else []
    argv = [*prefix, sys.executable, "-m", "server", "--listen", f"127.0.0.1:{ports[0]}",
            "--database-url", database_url,
            # Metrics stay on, as in production, on a free port rather than the default.
            "--metrics-listen", "127.0.0.1:0", *server_args]
    return GrpcServer(name, argv, ports, workdir)


def bare_server(responses: Path, workdir: Path, threads: int, workers: int = 1,
                aio: bool = False, name: str = "bare", burn_us: float = 0.0) -> GrpcServer:
    """The bare servicer (sync grpcio, or grpc.aio), `workers` processes on consecutive
    ports as the real server's workers are; its UpsertState burns `burn_us` of CPU."""
    ports = free_ports(workers)
    argv = [sys.executable, "-m", "bench.bare_server", "--listen", f"127.0.0.1:{ports[0]}",
            "--responses", str(responses), "--threads", str(threads),
            "--workers", str(workers), "--burn-us", str(burn_us), *(["--aio"] if aio else [])]
    return GrpcServer(name, argv, ports, workdir)


class PeerProcess(LoggedProcess):
    """The FastAPI peer (bench/peer_app.py) of one shape (`def` or `async`) on a free port,
    ready once it answers."""

    def __init__(self, db: Path, workdir: Path, name: str = "peer", shape: str = "def"):
        self.port = free_port()
        argv = [sys.executable, "-m", "bench.peer_app", "--listen", f"127.0.0.1:{self.port}",
                "--database", str(db), "--shape", shape]
        super().__init__(name, argv, workdir, own_session=True)
        with self.stopped_on_failure():
            wait_until(self._ready, _START_TIMEOUT_S, f"{name} to answer", ignoring=(OSError,))

    def _ready(self) -> bool:
        self.check_alive()
        return request("127.0.0.1", self.port, "GET", "/health")[0] == 200


def envoy_in_front(upstream: GrpcServer, name: str, workdir: Path, concurrency: int
                   ) -> EnvoyProcess:
    """envoy.yaml in front of `upstream`, each of its processes an endpoint of its own so
    that Envoy balances requests over them; ready once the health check found all."""
    envoy = EnvoyProcess(upstream.ports, workdir, name=name, concurrency=concurrency,
                         own_session=True)
    with envoy.stopped_on_failure():
        envoy.wait_healthy(len(upstream.ports), timeout=_START_TIMEOUT_S)
    return envoy
