"""Three replicas over one PostgreSQL behind Envoy: writers lose nothing, through a replica
killed mid-load and a replica draining on SIGTERM."""

import contextlib
import itertools
import signal
import threading
from collections.abc import Iterator

import grpc
import pytest

from harness.cluster import Cluster
from harness.postgres import fresh_postgres_database
from harness.processes import ServerProcess
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.databases import query
from tests.support.threads import BackgroundThreads

WRITERS = 8
LEADS = ("+6281234567001", "+6281234567002")
_request_ids = itertools.count()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            postgres_server_url: str) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("cluster"),
                      fresh_postgres_database(postgres_server_url, "sarah_cluster"))
    yield running
    running.stop()


class Writers(BackgroundThreads):
    """WRITERS threads adding messages to LEADS through Envoy, each with its own slot.

    Every call carries a request_id, so the client library's retries are safe; `acked`
    counts the messages whose call returned OK, `errors` every call that failed anyway.
    """

    def __init__(self, cluster: Cluster, workspace: str, count: int = WRITERS):
        self.workspace = workspace
        self.acked = dict.fromkeys(LEADS, 0)
        self.errors: list[Exception] = []
        self._lock = threading.Lock()
        self._cluster = cluster
        super().__init__(count, join_timeout=60)

    def run(self, writer: int) -> None:
        with self._cluster.client() as sarah:
            for round_ in itertools.count():
                if self.stopping.is_set():
                    return
                phone = LEADS[round_ % len(LEADS)]
                try:
                    sarah.upsert_state(
                        contact_phone=phone, workspace_id=self.workspace, add_messages=1,
                        request_id=f"w{writer}-{next(_request_ids)}",
                        extracted_data={"goals": f"writer {writer}"} if writer % 2 else
                        {"name": f"writer {writer}"},
                    )
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    with self._lock:
                        self.errors.append(exc)
                    continue
                with self._lock:
                    self.acked[phone] += 1

    def acked_total(self) -> int:
        with self._lock:
            return sum(self.acked.values())

    def wait_for_writes(self, count: int, served_by: tuple[ServerProcess, ...] = ()) -> None:
        """Until `count` more calls have returned OK, and each of `served_by` has served a
        write: the load seen flowing, where a fixed sleep hoped it was."""
        target = self.acked_total() + count
        wait_until(lambda: self.acked_total() >= target and all(map(_served, served_by)),
                   60, f"{count} more writes" + (" reaching every replica" if served_by
                                                  else ""), interval=0.02)

    def assert_nothing_lost(self, cluster: Cluster) -> None:
        assert not self.errors, self.errors[:3]
        assert all(self.acked.values())
        with cluster.client() as sarah:
            for phone, count in self.acked.items():
                lead = sarah.get_state(contact_phone=phone, workspace_id=self.workspace)
                assert lead.message_count == count, phone
                assert lead.extracted_data.name and lead.extracted_data.goals


def _served(replica: ServerProcess) -> int:
    """How many writes `replica` answered OK (its log, since it started)."""
    return sum("UpsertState code=OK" in line for line in list(replica.lines))


def test_writers_across_all_replicas_lose_nothing(cluster: Cluster) -> None:
    with Writers(cluster, "plain") as writers:
        writers.wait_for_writes(3 * WRITERS, served_by=tuple(cluster.replicas.values()))
    writers.assert_nothing_lost(cluster)
    served = [_served(r) for r in cluster.replicas.values()]
    assert all(served), f"Envoy should spread writes over every replica: {served}"


def test_replica_killed_mid_load_fails_no_call(cluster: Cluster) -> None:
    victim = cluster.ports[1]
    with Writers(cluster, "killed") as writers:
        writers.wait_for_writes(WRITERS)
        cluster.replicas[victim].stop(signal.SIGKILL)
        writers.wait_for_writes(WRITERS)  # through the two replicas left
        cluster.restart(victim)
        cluster.wait_healthy(3)
        writers.wait_for_writes(WRITERS, served_by=(cluster.replicas[victim],))
    writers.assert_nothing_lost(cluster)


def test_replica_draining_on_sigterm_fails_no_call(cluster: Cluster) -> None:
    victim = cluster.ports[2]
    with Writers(cluster, "drained") as writers:
        writers.wait_for_writes(WRITERS)
        log = cluster.replicas[victim].stop(signal.SIGTERM)
        assert "stopped" in log
        cluster.restart(victim)
        cluster.wait_healthy(3)
        writers.wait_for_writes(WRITERS, served_by=(cluster.replicas[victim],))
    writers.assert_nothing_lost(cluster)


def _watch(stream: Iterator[pb.LeadEvent], seen: list[int]) -> None:
    """Collect the revisions a replica streams, until the test cancels the stream."""
    try:
        for event in stream:
            if event.kind != pb.heartbeat:
                seen.append(event.revision)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            raise


def test_watchers_on_every_replica_see_every_revision_once_in_order(cluster: Cluster) -> None:
    """The PostgreSQL ordering proof: 16 writers spread over 3 replicas commit at once;
    a watcher on each replica must see every revision exactly once, in order, with no
    gap, and the same set the log holds. (A sequence-numbered log fails this: a revision
    committed after a higher one is skipped by a tailer that already passed it.)"""
    with cluster.client() as sarah:
        start = sarah.get_stats().revision
    seen: dict[int, list[int]] = {port: [] for port in cluster.ports}
    with contextlib.ExitStack() as channels:
        streams = {port: sarah_pb2_grpc.SarahServiceStub(channels.enter_context(
            grpc.insecure_channel(f"127.0.0.1:{port}"))).WatchLeads(
                pb.WatchLeadsRequest(since_revision=start), timeout=60)
            for port in cluster.ports}
        watchers = [threading.Thread(target=_watch, args=(streams[port], seen[port]),
                                     daemon=True) for port in cluster.ports]
        for watcher in watchers:
            watcher.start()
        with Writers(cluster, "watched", count=16) as writers:
            writers.wait_for_writes(3 * 16)
        writers.assert_nothing_lost(cluster)
        with cluster.client() as sarah:
            head = sarah.get_stats().revision
        # Each stream has passed the head (or does not within the wait: the assertions
        # below then say what it missed).
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: all(s and s[-1] >= head for s in seen.values()), 30,
                       "every watcher to reach the head", interval=0.02)
        for stream in streams.values():
            stream.cancel()
        for watcher in watchers:
            watcher.join(timeout=30)
    logged = [r for (r,) in query(cluster.database_url, "SELECT revision FROM lead_event "
                                  f"WHERE revision > {start} ORDER BY revision")]
    assert logged == list(range(start + 1, head + 1)), "the log has gaps"
    assert head - start >= sum(writers.acked.values())
    for port, revisions in seen.items():
        assert revisions == logged, (port, len(revisions), len(logged))
