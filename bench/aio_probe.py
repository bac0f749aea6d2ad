"""The real write path behind grpc.aio instead of grpcio's sync server (issue 25): is the
asyncio server the better shape for UpsertState?

    python -m bench.aio_probe --listen 127.0.0.1:PORT --database-url URL [--group-commit]
    python -m bench.aio_probe --compare [--rounds 3] [--duration 5]

A probe, not a server: UpsertState and GetState only, served by the real SarahService over
the real Repository (validation, identity, the merge, the change log, counts and
activity), converted by server/api/convert.py, each call reported to the real call log;
health for the harness. Left out, against it being an honest copy: the interceptor layers
(version trailer, metrics, the bound on calls), the watch hub and housekeeping. With
`--group-commit`, writes go to the store's writer thread as in the real server (the loop
waits on it through a thread hand-off); without, each write runs on the event loop itself,
a transaction of its own (SQLite's one writer is serialised by the loop anyway).

`--compare` starts the real server (one process) and the probe in both shapes in
alternating rounds, drives UpsertState with h2load as make bench does, and prints each
one's CPU per call from /proc.
"""

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from bench.bare_server import serve_aio_until_signalled
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert
from server.api.calllog import CallLog
from server.core.service import SarahService
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository

_LOGGER = logging.getLogger("bench.aio_probe")
_SERVICE = "/sarah.v1.SarahService/"


class _Probe(sarah_pb2_grpc.SarahServiceServicer):
    def __init__(self, service: SarahService, call_log: CallLog):
        self._service, self._log = service, call_log

    async def UpsertState(self, request: pb.UpsertStateRequest,  # noqa: N802 - gRPC's name
                          context: grpc.aio.ServicerContext) -> pb.Conversation:
        start = time.perf_counter()
        try:
            lead = self._service.upsert_state(convert.patch_from_proto(request))
            return convert.lead_to_proto(lead)
        except Exception as exc:  # noqa: BLE001 - the bench's calls never fail; if one does,
            # the harness counts it by its code (the real server's mapping is not copied)
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
            raise
        finally:
            self._log.record(_SERVICE + "UpsertState", "OK", time.perf_counter() - start, "-")

    async def GetState(self, request: pb.GetStateRequest,  # noqa: N802 - gRPC's name
                       context: grpc.aio.ServicerContext) -> pb.Conversation:
        lead = self._service.get_state(request.contact_phone, request.workspace_id)
        return convert.lead_to_proto(lead)


async def serve(listen: str, database_url: str, group_commit: bool) -> None:
    db = open_database(database_url)
    migrate(db)
    store = Repository(db, group_commit=group_commit)
    server = grpc.aio.server()
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(
        _Probe(SarahService(store), CallLog()), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    await serve_aio_until_signalled(
        server, health_servicer, f"aio probe on port {port} (group commit {group_commit})")
    store.close()


def compare(rounds: int, duration: float) -> list[str]:
    """The real server and both probe shapes in alternating rounds: CPU per UpsertState."""
    from bench import workload
    from bench.floor import SQLITE, Shape, server_upsert
    from bench.procs import GrpcServer
    from bench.run import measure
    from bench.seed import phone, seed
    from harness.ports import free_port

    workdir = Path(tempfile.mkdtemp(prefix="sarah-aio-probe-"))
    shapes = {"grpcio sync server (python -m server --workers 1)": None,
              "grpc.aio probe, writes on the loop": [],
              "grpc.aio probe, group commit's writer thread": ["--group-commit"]}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in shapes}
    try:
        seeded = workdir / "leads.db"
        seed(seeded, 1000, workdir, ["--workers", "1"])
        call = workload.calls(phone(0), phone(1001))["UpsertState"]
        for _ in range(rounds):
            for i, (name, flags) in enumerate(shapes.items()):
                db = workdir / f"shape-{i}.db"
                if not db.exists():
                    shutil.copy(seeded, db)
                if flags is None:
                    fig = server_upsert(SQLITE, f"sqlite:///{db}", 1000, workdir,
                                        ["--workers", "1"], Shape(duration), None, bare=False)[0]
                    cpu, rps = fig.cpu_us, fig.measured.result.rps
                else:
                    port = free_port()
                    probe = GrpcServer(f"aio-probe-{i}", [
                        sys.executable, "-m", "bench.aio_probe", "--listen",
                        f"127.0.0.1:{port}", "--database-url", f"sqlite:///{db}", *flags],
                        [port], workdir)
                    try:
                        loads = workload.grpc_loads(call, probe.ports, workdir, "aio-probe",
                                                    duration=duration, warmup=1.0,
                                                    concurrency=16, h2_connections=4)
                        measured = measure(loads, probe, None, "UpsertState", workdir,
                                           "aio-probe")
                    finally:
                        probe.stop()
                    cpu = (measured.cpu_ms_per_call or 0.0) * 1000
                    rps = measured.result.rps
                figures[name].append((cpu or 0.0, rps))
                _LOGGER.info("%s: %.0f us a call, %.0f req/s", name, cpu or 0.0, rps)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    width = max(map(len, figures))
    lines = [f"{'UpsertState, 16 in flight, one process':{width}}  CPU us/call (median; rounds)"
             "  req/s (median)"]
    for name, rows in figures.items():
        cpus = " ".join(f"{c:.0f}" for c, _ in rows)
        lines.append(f"{name:{width}}  {statistics.median(c for c, _ in rows):.0f} ({cpus})"
                     f"  {statistics.median(r for _, r in rows):.0f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.aio_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", help="host:port")
    parser.add_argument("--database-url")
    parser.add_argument("--group-commit", action="store_true",
                        help="writes through the store's writer thread (as the real server)")
    parser.add_argument("--compare", action="store_true",
                        help="measure the real server and both probe shapes, print CPU/call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.compare:
        print("\n".join(compare(args.rounds, args.duration)), flush=True)
        return 0
    if not args.listen or not args.database_url:
        parser.error("--listen and --database-url, or --compare")
    asyncio.run(serve(args.listen, args.database_url, args.group_commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
