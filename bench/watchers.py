"""`python -m bench.watchers`: hold N WatchLeads streams open on a server, read every event
and discard it, as N dashboards would. Its own process, so that the watchers' reading
costs the server's process nothing but the sending.

    python -m bench.watchers --target 127.0.0.1:PORT --count 200 --since REVISION
                             [--workspace ID]

Every stream starts after `--since`; "ready" is printed once each has received an event
(the bench writes one after starting this), so that all N are joined before the
measurement. A stream dropped for falling behind (RESOURCE_EXHAUSTED) resumes from its
last revision and is counted. On SIGTERM it prints "events E dropped D" and exits.
"""

import argparse
import asyncio
import signal
import sys
from dataclasses import dataclass, field

import grpc

from sarah.v1 import sarah_pb2 as pb

_WATCH = "/sarah.v1.SarahService/WatchLeads"
_Watch = grpc.aio.UnaryStreamMultiCallable[pb.WatchLeadsRequest, pb.LeadEvent]


@dataclass
class Tally:
    events: int = 0
    dropped: int = 0
    heard: set[int] = field(default_factory=set)  # watchers that received an event
    failure: BaseException | None = None  # a stream that ended otherwise: stop them all


def _method(channel: grpc.aio.Channel) -> _Watch:
    return channel.unary_stream(_WATCH,
                                request_serializer=pb.WatchLeadsRequest.SerializeToString,
                                response_deserializer=pb.LeadEvent.FromString)


async def _watch(watch: _Watch, index: int, since: int,
                 workspace: str | None, tally: Tally, everyone: int, stop: asyncio.Event
                 ) -> None:
    last = since
    try:
        while True:
            request = pb.WatchLeadsRequest(since_revision=last)
            if workspace is not None:
                request.workspace_id = workspace
            try:
                async for event in watch(request):
                    if event.kind == pb.heartbeat:
                        continue
                    last = event.revision
                    tally.events += 1
                    if index not in tally.heard:
                        tally.heard.add(index)
                        if len(tally.heard) == everyone:
                            print("ready", flush=True)
            except grpc.aio.AioRpcError as failed:
                if failed.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                tally.dropped += 1
    except asyncio.CancelledError:
        raise
    except Exception as failed:  # noqa: BLE001 - reported by _main, which stops
        tally.failure = failed
        stop.set()


async def _main(target: str, count: int, since: int, workspace: str | None,
                channels: int) -> None:
    opened = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    methods = [_method(channel) for channel in opened]
    tally = Tally()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(_watch(methods[i % channels], i, since, workspace, tally,
                                        count, stop))
             for i in range(count)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    print(f"events {tally.events} dropped {tally.dropped}", flush=True)
    for channel in opened:
        await channel.close()
    if tally.failure is not None:
        raise tally.failure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.watchers",
                                description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--since", type=int, required=True)
    p.add_argument("--workspace", help="watch only this workspace (default: every one)")
    p.add_argument("--channels", type=int, default=4,
                   help="HTTP/2 connections the streams spread over (default 4)")
    args = p.parse_args(argv)
    asyncio.run(_main(args.target, args.count, args.since, args.workspace, args.channels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
