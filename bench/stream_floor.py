"""`python -m bench.stream_floor`: what one streamed message costs a bare grpcio server.

    python -m bench.stream_floor [--streams 200] [--rate 10] [--seconds 5] [--aio]

A servicer of WatchLeads that does nothing but send: every stream gets one constant
LeadEvent per tick (`--rate` ticks a second), read by bench/watchers.py in a process of
its own, as the bench's watchers are. It prints this process's CPU time per message sent:
the floor under what the real server's watchers cost its writers, with grpcio's sync server
(the real server's) or, with --aio, grpc.aio's.
"""

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc

# The size of a real upsert's event (an unnamed lead with a few fields set).
_EVENT = pb.LeadEvent(revision=5, kind=pb.upserted, changed=["state"],
                      at=Timestamp(seconds=1_700_000_000),
                      conversation=pb.Conversation(contact_phone="+6281200000001",
                                                   workspace_id="w", etag="abc", lead_score=3))
_WARMUP_S = 4.0  # the watchers' joining and the first ticks


def _watchers(port: int, streams: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.watchers", "--target",
                             f"127.0.0.1:{port}", "--count", str(streams), "--since", "0"],
                            stdout=subprocess.PIPE, text=True)


def _report(streams: int, ticks: int, seconds: float, cpu: float, kind: str) -> str:
    sent = ticks * streams
    return (f"{kind}: {streams} streams, {ticks / seconds:.0f} ticks/s, {sent / seconds:.0f} "
            f"messages/s, server {cpu / seconds:.2f} cores: {1e6 * cpu / max(sent, 1):.0f} us "
            "of CPU per message")


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def run_sync(streams: int, rate: float, seconds: float) -> str:
    tick = [0]
    ticked = threading.Condition()

    class Servicer(sarah_pb2_grpc.SarahServiceServicer):
        def WatchLeads(self, request: pb.WatchLeadsRequest,  # noqa: N802 - gRPC's name
                       context: grpc.ServicerContext) -> Iterator[pb.LeadEvent]:
            seen = 0
            while context.is_active():
                with ticked:
                    ticked.wait_for(lambda last=seen: tick[0] != last, timeout=1)
                    count, seen = tick[0] - seen, tick[0]
                for _ in range(count):
                    yield _EVENT

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=streams + 8))
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(1 / rate):
            with ticked:
                tick[0] += 1
                ticked.notify_all()

    holder = _watchers(port, streams)
    threading.Thread(target=ticker, daemon=True).start()
    try:
        time.sleep(_WARMUP_S)
        cpu, start, first = _cpu(), time.monotonic(), tick[0]
        time.sleep(seconds)
        cpu, wall, ticks = _cpu() - cpu, time.monotonic() - start, tick[0] - first
    finally:
        stop.set()
        holder.terminate()
        holder.communicate()
        server.stop(0)
    return _report(streams, ticks, wall, cpu, "grpcio sync server")


async def _run_aio(streams: int, rate: float, seconds: float) -> str:
    tick = [0]
    ticked = asyncio.Condition()

    class Servicer(sarah_pb2_grpc.SarahServiceServicer):
        async def WatchLeads(self, request: pb.WatchLeadsRequest,  # noqa: N802 - gRPC's name
                             context: object) -> AsyncIterator[pb.LeadEvent]:
            seen = 0
            while True:
                async with ticked:
                    await ticked.wait_for(lambda last=seen: tick[0] != last)
                    count, seen = tick[0] - seen, tick[0]
                for _ in range(count):
                    yield _EVENT

    server = grpc.aio.server()
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(1 / rate)
            async with ticked:
                tick[0] += 1
                ticked.notify_all()

    holder = _watchers(port, streams)
    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(_WARMUP_S)
        cpu, start, first = _cpu(), time.monotonic(), tick[0]
        await asyncio.sleep(seconds)
        cpu, wall, ticks = _cpu() - cpu, time.monotonic() - start, tick[0] - first
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
        holder.terminate()
        holder.communicate()
        await server.stop(0)
    return _report(streams, ticks, wall, cpu, "grpc.aio server")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stream_floor",
                                description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0,
                   help="messages a second to each stream (default 10: below what the "
                        "watchers' process can read, so the server is what is measured)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--aio", action="store_true", help="grpc.aio's server instead of the sync one")
    args = p.parse_args(argv)
    if args.aio:
        print(asyncio.run(_run_aio(args.streams, args.rate, args.seconds)), flush=True)
    else:
        print(run_sync(args.streams, args.rate, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
