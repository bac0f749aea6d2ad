"""`python -m server.probe`: a container's health check, run inside it, on its loopback.

    python -m server.probe                  # exit 0 if the server reports SERVING
    python -m server.probe --live           # exit 0 if it answers at all (NOT_SERVING too)
    python -m server.probe --drain-envoy 10 # a preStop: Envoy drains, then wait 10 s

The server's port is SARAH_LISTEN's (the image's 0.0.0.0:50051 asks 127.0.0.1:50051): the
probe runs where the server does, as the image's HEALTHCHECK and the Kubernetes exec probe
do. `--live` is for a liveness check: a server whose database is down reports NOT_SERVING
and must be taken out of rotation, not restarted.
"""

import argparse
import os
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2

_DEFAULT_LISTEN = "127.0.0.1:50051"
_WILDCARDS = ("0.0.0.0", "[::]", "::", "")


def loopback_target(listen: str) -> str:
    """Where to reach a server listening on `listen` from inside its own container."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in _WILDCARDS else listen


def health(target: str, timeout: float) -> int | None:
    """The server's grpc.health.v1 status for the whole server (service ""), or None if it
    does not answer within `timeout` seconds."""
    with grpc.insecure_channel(target) as channel:
        # grpcio-health-checking's stub has no types for its methods; the call is this.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)
        try:
            reply: health_pb2.HealthCheckResponse = check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return None
    return reply.status


def drain_envoy(admin: str, seconds: float) -> None:
    """Ask Envoy to drain its listeners gracefully (HTTP/1.1 callers get `connection:
    close`, HTTP/2 ones a GOAWAY, so they reconnect to another Pod), then wait `seconds`
    while the platform stops sending new connections here; Envoy's SIGTERM comes after."""
    request = urllib.request.Request(f"http://{admin}/drain_listeners?graceful", method="POST")
    try:
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - loopback admin
    except OSError as exc:
        print(f"envoy drain: {exc}", file=sys.stderr)
    time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", action="store_true",
                        help="succeed on any answer from the health service")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--target", default=None,
                        help="host:port (default: SARAH_LISTEN's port on 127.0.0.1)")
    parser.add_argument("--drain-envoy", type=float, metavar="SECONDS", default=None,
                        help="drain the Envoy whose admin is --admin, wait SECONDS, exit 0")
    parser.add_argument("--admin", default="127.0.0.1:9901",
                        help="Envoy's admin host:port (default 127.0.0.1:9901)")
    args = parser.parse_args(argv)
    if args.drain_envoy is not None:
        drain_envoy(args.admin, args.drain_envoy)
        return 0
    target = args.target or loopback_target(os.environ.get("SARAH_LISTEN", _DEFAULT_LISTEN))
    status = health(target, args.timeout)
    if status is None:
        print(f"{target}: no answer from the health service", file=sys.stderr)
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"{target}: {name}")
    return 0 if args.live or status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
