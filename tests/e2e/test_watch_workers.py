"""WatchLeads across the worker processes of `python -m server --workers 2` on SQLite: the
workers share one database file, each with its own hub, and learn of the other's commits
only from the log itself. Writers on both ports for a while; a watcher on each worker must
see every revision exactly once, in order, gapless, and the same events the log holds."""

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client import SarahClient
from harness.processes import ServerProcess, start_workers
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.databases import query
from tests.support.threads import CountedWrites

WRITERS = 4
LEADS = ("+6281234567001", "+6281234567002", "+6281234567003")
_WRITE_FOR_S = 2.0
# Longer than the workers' poll of the log (0.25 s), which wakes a watcher for the other
# worker's commits.
_REPEATS_WITHIN_S = 0.6
_request_ids = itertools.count()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_workers(2, f"sqlite:///{tmp_path / 'sarah.db'}")
    yield running
    running.stop()


def _writers(ports: list[int]) -> CountedWrites:
    """WRITERS threads, writer i on worker i % 2, adding messages to LEADS in turn; every
    call must succeed."""
    def write(sarah: SarahClient, writer: int, round_: int) -> object:
        return sarah.upsert_state(contact_phone=LEADS[round_ % len(LEADS)], add_messages=1,
                                  request_id=f"w{next(_request_ids)}",
                                  extracted_data={"goals": f"writer {writer}"})

    return CountedWrites([f"127.0.0.1:{port}" for port in ports], WRITERS, write)


class Watcher:
    """A stream from revision 0 on one worker, collecting (revision, kind, etag) of each
    change until cancelled."""

    def __init__(self, port: int):
        self.seen: list[tuple[int, str, str]] = []
        self.error: grpc.RpcError | None = None
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stream = sarah_pb2_grpc.SarahServiceStub(self._channel).WatchLeads(
            pb.WatchLeadsRequest(since_revision=0), timeout=60)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                if event.kind != pb.heartbeat:
                    self.seen.append((event.revision, pb.EventKind.Name(event.kind),
                                      event.conversation.etag))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc

    def reached(self, revision: int) -> bool:
        return bool(self.seen) and self.seen[-1][0] >= revision

    def cancel(self) -> None:
        self._stream.cancel()
        self.thread.join(timeout=10)
        self._channel.close()


def test_watchers_on_both_sqlite_workers_see_every_revision_once_in_order(
        workers: ServerProcess, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sarah.db'}"
    watchers = [Watcher(port) for port in workers.ports]
    with _writers(workers.ports) as writers:
        time.sleep(_WRITE_FOR_S)
    assert not writers.errors, writers.errors[:3]
    with SarahClient(workers.target, timeout=20) as sarah:
        head = sarah.get_stats().revision
        counts = [sarah.get_state(contact_phone=phone).message_count for phone in LEADS]
    for watcher in watchers:
        wait_until(lambda: watcher.reached(head) or watcher.error, 15,  # noqa: B023
                   f"a watcher to reach revision {head}")
    time.sleep(_REPEATS_WITHIN_S)  # a revision delivered twice would arrive by now
    for watcher in watchers:
        watcher.cancel()
    logged = [(int(r), k, e) for r, k, e in query(
        url, "SELECT revision, kind, json_extract(conversation, '$.etag') FROM lead_event "
             "ORDER BY revision")]
    # Every acknowledged write is one event (no request_id repeats), nothing else wrote.
    assert sum(counts) == writers.acked == head > 0, (counts, writers.acked, head)
    assert [r for r, _, _ in logged] == list(range(1, head + 1)), "the log has gaps"
    for port, watcher in zip(workers.ports, watchers, strict=True):
        assert watcher.error is None, (port, watcher.error)
        assert watcher.seen == logged, (port, len(watcher.seen), len(logged))
