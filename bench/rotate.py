"""A load generator for what h2load cannot send: a different request body each call.

    python -m bench.rotate --targets 127.0.0.1:P[,127.0.0.1:P2] --method /pkg.Svc/Rpc
                           --bodies FILE --concurrency 16 --connections 4
                           --duration 10 --warmup 1 --out RESULT.json

h2load repeats one body (`-d`), so UpsertState over 1,000 distinct leads in rotation needs
another generator. This one is grpc.aio's client in a process of its own: `--connections`
HTTP/2 connections per target (channels that share no subchannel), `--concurrency` calls in
flight in all, each taking the next serialized request of FILE (JSON, a list of base64
strings) in turn. Requests go out as bytes, serialized once beforehand, so the client's
per-call cost is grpcio's and not protobuf's. It costs more CPU per call than h2load, so
the bench measures the real server and its ceiling with it alike and compares those two
only; the result is JSON with h2load.Result's fields.
"""

import argparse
import asyncio
import base64
import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import h2load


@dataclass(frozen=True)
class Rotation:
    """One run of this generator, from the bench's side."""

    ports: list[int]
    method: str
    bodies: list[bytes]
    concurrency: int
    connections: int
    duration: float
    warmup: float

    def run(self, workdir: Path, label: str) -> h2load.Result:
        bodies, out = workdir / f"{label}-bodies.json", workdir / f"{label}.json"
        bodies.write_text(json.dumps([base64.b64encode(b).decode() for b in self.bodies]))
        argv = [sys.executable, "-m", "bench.rotate", "--method", self.method,
                "--targets", ",".join(f"127.0.0.1:{port}" for port in self.ports),
                "--bodies", str(bodies), "--concurrency", str(self.concurrency),
                "--connections", str(self.connections), "--duration", str(self.duration),
                "--warmup", str(self.warmup), "--out", str(out)]
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=self.duration + self.warmup + 120)
        if done.returncode != 0:
            raise RuntimeError(f"bench.rotate failed ({done.returncode}): {done.stderr[-2000:]}")
        figures = json.loads(out.read_text())
        ok = len(figures["micros"])
        return h2load.summarize(ok / self.duration, figures["done"], figures["failed"], 0,
                                figures["micros"], [], ok / self.duration)


async def _drive(args: argparse.Namespace, bodies: list[bytes]) -> dict[str, object]:
    targets = args.targets.split(",")
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for target in targets
                for _ in range(max(1, args.connections // len(targets)))]
    calls = [channel.unary_unary(args.method) for channel in channels]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    rotation = itertools.cycle(bodies)
    start = time.monotonic()
    measure_from = start + args.warmup
    end = measure_from + args.duration
    micros: list[int] = []
    failed = 0

    async def caller(i: int) -> None:
        nonlocal failed
        call = calls[i % len(calls)]
        while (now := time.monotonic()) < end:
            try:
                await call(next(rotation), timeout=60)
                ok = True
            except grpc.aio.AioRpcError:
                ok = False
            if now >= measure_from:
                if ok:
                    micros.append(round((time.monotonic() - now) * 1e6))
                else:
                    failed += 1

    await asyncio.gather(*(caller(i) for i in range(args.concurrency)))
    for channel in channels:
        await channel.close()
    return {"done": len(micros) + failed, "failed": failed, "seconds": args.duration,
            "micros": micros}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.rotate", description=__doc__.split("\n")[0])
    parser.add_argument("--targets", required=True, help="host:port, comma-separated")
    parser.add_argument("--method", required=True, help="/package.Service/Method")
    parser.add_argument("--bodies", required=True, type=Path, help="JSON list of base64")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    bodies = [base64.b64decode(text) for text in json.loads(args.bodies.read_text())]
    args.out.write_text(json.dumps(asyncio.run(_drive(args, bodies))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
