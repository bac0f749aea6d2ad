"""The ceiling: a bare grpcio sarah.v1.SarahService that answers every call with a constant.

    python -m bench.bare_server --listen 127.0.0.1:PORT --responses FILE [--threads 8]

FILE is JSON, {"GetState": "<base64 of a serialized response>", ...}: the real server's
own answers to the bench's requests, so each constant is the same size as the real one.
The server is built as server/app.py builds the real one (a thread pool of the same size,
health for Envoy's active check) minus everything the service itself does: no validation,
no database, no call log. What it costs is what grpcio and protobuf cost.
"""

import argparse
import base64
import json
import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.config import Config

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


class BareServicer(sarah_pb2_grpc.SarahServiceServicer):
    """Every RPC returns its constant; the request is parsed by grpcio and then ignored."""

    def __init__(self, responses: dict[str, object]):
        self._responses = responses

    def GetState(self, request, context):
        return self._responses["GetState"]

    def UpsertState(self, request, context):
        return self._responses["UpsertState"]

    def ListLeads(self, request, context):
        return self._responses["ListLeads"]

    def GetStats(self, request, context):
        return self._responses["GetStats"]

    def DeleteState(self, request, context):
        return self._responses["DeleteState"]


def create_server(listen: str, responses: dict[str, object], threads: int
                  ) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(BareServicer(responses), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bare_server", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="host:port; port 0 picks a free one")
    parser.add_argument("--responses", required=True, type=Path, help="JSON of constants")
    parser.add_argument("--threads", type=int, default=Config().threads,
                        help="worker threads (default: the real server's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server, port = create_server(args.listen, load_responses(args.responses), args.threads)
    _LOGGER.info("bare servicer listening on port %d", port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(None).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
