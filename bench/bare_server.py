"""The ceiling: a bare sarah.v1.SarahService that answers every call with a constant.

    python -m bench.bare_server --listen 127.0.0.1:PORT --responses FILE [--threads 8]
                                [--aio] [--workers N] [--burn-us US]

FILE is JSON, {"GetState": "<base64 of a serialized response>", ...}: the real server's
own answers to the bench's requests, so each constant is the same size as the real one.
The sync server is built as server/app.py builds the real one (a thread pool of the same
size, health for Envoy's active check); `--aio` serves the same constants from grpc.aio
(one event loop, no thread pool), the other shape grpcio offers. Both leave out everything
the service itself does: no validation, no database, no call log. What they cost is what
grpcio and protobuf cost. `--workers N` runs N such processes, process i on the port + i,
as `sarah-server --workers N` does, under the same supervisor.
"""

import argparse
import asyncio
import base64
import json
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.config import Config
from server.supervise import supervise

_LOGGER = logging.getLogger("bench.bare_server")

RESPONSE_TYPES = {
    "GetState": pb.Conversation,
    "UpsertState": pb.Conversation,
    "ListLeads": pb.ListLeadsResponse,
    "GetStats": pb.GetStatsResponse,
    "DeleteState": pb.DeleteStateResponse,
}


def load_responses(path: Path) -> dict[str, object]:
    encoded = json.loads(path.read_text())
    return {rpc: RESPONSE_TYPES[rpc].FromString(base64.b64decode(data))
            for rpc, data in encoded.items()}


def burn(seconds: float) -> None:
    """Keep this thread busy in Python for `seconds` of its own CPU time, holding the GIL
    as the service's Python does (issue 25: a server with the write path's CPU and none
    of its waits, hand-offs or cache misses)."""
    if seconds > 0:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass


class BareServicer(sarah_pb2_grpc.SarahServiceServicer):
    """Every RPC returns its constant; the request is parsed by grpcio and then ignored.
    UpsertState first burns `burn_s` of CPU in Python (0 by default)."""

    def __init__(self, responses: dict[str, object], burn_s: float = 0.0):
        self._responses = responses
        self._burn_s = burn_s

    def GetState(self, request, context):
        return self._responses["GetState"]

    def UpsertState(self, request, context):
        burn(self._burn_s)
        return self._responses["UpsertState"]

    def ListLeads(self, request, context):
        return self._responses["ListLeads"]

    def GetStats(self, request, context):
        return self._responses["GetStats"]

    def DeleteState(self, request, context):
        return self._responses["DeleteState"]


class AioBareServicer(sarah_pb2_grpc.SarahServiceServicer):
    """The same constants from coroutines, for grpc.aio."""

    def __init__(self, responses: dict[str, object], burn_s: float = 0.0):
        self._responses = responses
        self._burn_s = burn_s

    async def GetState(self, request, context):
        return self._responses["GetState"]

    async def UpsertState(self, request, context):
        burn(self._burn_s)
        return self._responses["UpsertState"]

    async def ListLeads(self, request, context):
        return self._responses["ListLeads"]

    async def GetStats(self, request, context):
        return self._responses["GetStats"]

    async def DeleteState(self, request, context):
        return self._responses["DeleteState"]


def create_server(listen: str, responses: dict[str, object], threads: int,
                  burn_s: float = 0.0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(BareServicer(responses, burn_s), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port


def _serve_sync(listen: str, responses: dict[str, object], threads: int,
                burn_s: float) -> None:
    server, port = create_server(listen, responses, threads, burn_s)
    _LOGGER.info("bare grpcio servicer listening on port %d", port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(None).wait()


async def _serve_aio(listen: str, responses: dict[str, object], burn_s: float) -> None:
    server = grpc.aio.server()
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(AioBareServicer(responses, burn_s),
                                                      server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    await serve_aio_until_signalled(server, health_servicer,
                                    f"bare grpc.aio servicer listening on port {port}")


async def serve_aio_until_signalled(server: grpc.aio.Server,
                                    health_servicer: health.aio.HealthServicer,
                                    started: str) -> None:
    """Start `server`, report SERVING, log `started`, and serve until SIGTERM or SIGINT."""
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    _LOGGER.info("%s", started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(None)


def _moved(listen: str, offset: int) -> str:
    host, _, port = listen.rpartition(":")
    return f"{host}:{int(port) + offset}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bare_server", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--responses", required=True, type=Path, help="JSON of constants")
    parser.add_argument("--threads", type=int, default=Config().threads,
                        help="worker threads of the sync server (default: the real "
                             "server's default)")
    parser.add_argument("--aio", action="store_true", help="serve from grpc.aio")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, process i on the --listen port + i (default 1)")
    parser.add_argument("--burn-us", type=float, default=0.0,
                        help="CPU microseconds UpsertState spends in Python before "
                             "answering (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.workers > 1:
        own = list(sys.argv[1:] if argv is None else argv)
        commands = {f"bare-{i}": [sys.executable, "-m", "bench.bare_server", *own,
                                  "--workers", "1", "--listen", _moved(args.listen, i)]
                    for i in range(args.workers)}
        return supervise(commands, f"bare servicer: {args.workers} processes", Path.cwd())
    responses = load_responses(args.responses)
    if args.aio:
        asyncio.run(_serve_aio(args.listen, responses, args.burn_us / 1e6))
    else:
        _serve_sync(args.listen, responses, args.threads, args.burn_us / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
