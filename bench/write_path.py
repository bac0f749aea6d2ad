"""The write path's own CPU: the bench's UpsertState served in one thread without gRPC
(issue 25).

What the servicer's body does per call (convert the request, validate it, the store's
write with group commit, the transaction, the merge, the change log, the answer back to
protobuf) called in a loop on a copy of the bench's database, CPU per call from the
process's clock. No gRPC, no threads waiting on each other: what the service's own work
costs, beside the floor (its statements alone) and the server's CPU per call (the same
work inside grpcio's server). bench/floor.py then starts the bare servicer burning that
much CPU per UpsertState: a server doing exactly this much Python, with none of the
service's waits, for what grpcio makes of it.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from sarah.v1 import sarah_pb2 as pb
from server.api import convert
from server.core.service import SarahService
from server.storage.database import open_database
from server.storage.repository import Repository


@dataclass(frozen=True)
class WritePath:
    cpu_us: float  # CPU per call, this process
    wall_us: float  # time per call (one thread's rate is its inverse)
    answer: bytes  # the last call's answer, serialized (the bare servicer's constant)


def write_path_cpu(db: Path, request: Message, writes: int) -> WritePath:
    """Serve UpsertState's `request` `writes` times (after a tenth as many to warm up) on
    the SQLite file `db`, seeded as the bench seeds it."""
    assert isinstance(request, pb.UpsertStateRequest)
    database = open_database(f"sqlite:///{db}")
    store = Repository(database)
    service = SarahService(store)

    def call() -> pb.Conversation:
        return convert.lead_to_proto(service.upsert_state(convert.patch_from_proto(request)))

    try:
        for _ in range(max(1, writes // 10)):
            call()
        start, wall = time.process_time(), time.perf_counter()
        for _ in range(writes):
            answer = call()
        cpu_us = (time.process_time() - start) / writes * 1e6
        wall_us = (time.perf_counter() - wall) / writes * 1e6
    finally:
        store.close()
    return WritePath(cpu_us, wall_us, answer.SerializeToString())
