"""WatchLeads over gRPC on a real server, on both databases: list-then-watch, resume,
merges and erasure in the log, heartbeats, scoping, limits and bad input."""

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from harness.waiting import wait_until
from sarah import VERSION
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer, create_server
from server.config import Config
from server.core.service import now_us
from tests.support.databases import query
from tests.support.helpers import DAY_US, Clock
from tests.support.servers import serving

PHONE = "+6281234567890"
OTHER = "+6281234567891"


def _phone(i: int) -> str:
    return f"+62812{i:07d}"


@pytest.fixture
def watch_server(database_url: str) -> Iterator[RunningServer]:
    with serving(database_url, watch_heartbeat_seconds=0.5, max_watchers=3,
                 watch_buffer=20) as server:
        yield server


@pytest.fixture
def wstub(watch_server: RunningServer) -> Iterator[sarah_pb2_grpc.SarahServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{watch_server.port}") as ch:
        yield sarah_pb2_grpc.SarahServiceStub(ch)


def _take(stream: Iterator[pb.LeadEvent], n: int, skip_heartbeats: bool = True
          ) -> list[pb.LeadEvent]:
    got: list[pb.LeadEvent] = []
    for event in stream:
        if skip_heartbeats and event.kind == pb.heartbeat:
            continue
        got.append(event)
        if len(got) == n:
            break
    return got


def test_list_then_watch_misses_nothing_and_revisions_follow_the_writes(
        wstub: sarah_pb2_grpc.SarahServiceStub) -> None:
    assert wstub.ListLeads(pb.ListLeadsRequest(), timeout=10).revision == 0
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, state=pb.qualifying),
                      timeout=10)
    listed = wstub.ListLeads(pb.ListLeadsRequest(), timeout=10)
    stats = wstub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert listed.revision == stats.revision == 1
    stream = wstub.WatchLeads(pb.WatchLeadsRequest(since_revision=listed.revision), timeout=30)
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, lead_score=70,
                                            extracted_data=pb.ExtractedData(name="Budi")),
                      timeout=10)
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=OTHER), timeout=10)
    # Erasure removes a lead's earlier events from the log: read the upsert before the
    # delete, or a watcher still catching up may find it already gone (a flake once).
    got = _take(stream, 2)
    wstub.DeleteState(pb.DeleteStateRequest(contact_phone=OTHER), timeout=10)
    wstub.DeleteState(pb.DeleteStateRequest(contact_phone=OTHER), timeout=10)  # unknown: none
    got += _take(stream, 1)
    stream.cancel()
    assert [(e.revision, e.kind) for e in got] == [
        (2, pb.upserted), (3, pb.upserted), (4, pb.deleted)]
    assert got[0].conversation.extracted_data.name == "Budi"
    assert list(got[0].changed) == ["lead_score", "extracted_data.name"]
    assert got[2].conversation.contact_phone == OTHER and not got[2].conversation.etag
    assert wstub.GetStats(pb.GetStatsRequest(), timeout=10).revision == 4


def test_resume_replays_exactly_the_events_after_the_revision(
        wstub: sarah_pb2_grpc.SarahServiceStub) -> None:
    for i in range(5):
        wstub.UpsertState(pb.UpsertStateRequest(contact_phone=_phone(i)), timeout=10)
    stream = wstub.WatchLeads(pb.WatchLeadsRequest(since_revision=2), timeout=30)
    assert [e.revision for e in _take(stream, 3)] == [3, 4, 5]
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=_phone(9)), timeout=10)
    assert [e.revision for e in _take(stream, 1)] == [6]
    stream.cancel()


def test_a_request_id_retry_logs_nothing_and_a_merge_logs_the_absorbed_half(
        wstub: sarah_pb2_grpc.SarahServiceStub, database_url: str) -> None:
    for _ in range(2):
        wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, request_id="r1"),
                          timeout=10)
    wstub.UpsertState(pb.UpsertStateRequest(business_scoped_user_id="ID.1"), timeout=10)
    # Naming both keys merges the BSUID-only half into the phone's lead.
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, business_scoped_user_id="ID.1"),
                      timeout=10)
    rows = query(database_url, "SELECT revision, kind, contact_phone, business_scoped_user_id "
                 "FROM lead_event ORDER BY revision")
    assert [r[1] for r in rows[:2]] == ["upserted", "upserted"]
    # The absorbed half (whichever the identity rules pick) is deleted, then the survivor.
    assert rows[2][1] == "deleted" and tuple(rows[2][2:]) in ((PHONE, ""), ("", "ID.1"))
    assert tuple(rows[3][1:]) == ("upserted", PHONE, "ID.1")
    assert [r[0] for r in rows] == [1, 2, 3, 4]


def test_since_omitted_is_from_now_on_and_heartbeats_carry_the_revision(
        wstub: sarah_pb2_grpc.SarahServiceStub) -> None:
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE), timeout=10)
    stream = wstub.WatchLeads(pb.WatchLeadsRequest(), timeout=30)
    first = next(stream)
    assert (first.kind, first.revision, first.HasField("conversation"), list(first.changed)) == (
        pb.heartbeat, 1, False, [])
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=OTHER), timeout=10)
    assert [e.revision for e in _take(stream, 1)] == [2]
    stream.cancel()


def test_a_workspace_scoped_watch_sees_only_its_workspace(
        wstub: sarah_pb2_grpc.SarahServiceStub) -> None:
    stream = wstub.WatchLeads(pb.WatchLeadsRequest(workspace_id="a", since_revision=0),
                              timeout=30)
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, workspace_id="b"), timeout=10)
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, workspace_id="a"), timeout=10)
    got = _take(stream, 1)
    stream.cancel()
    assert [(e.revision, e.conversation.workspace_id) for e in got] == [(2, "a")]


def test_bad_since_revision_and_too_many_watchers(
        wstub: sarah_pb2_grpc.SarahServiceStub) -> None:
    for since, code in ((-1, grpc.StatusCode.INVALID_ARGUMENT),
                        (5, grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as err:
            next(wstub.WatchLeads(pb.WatchLeadsRequest(since_revision=since), timeout=10))
        assert err.value.code() == code and "since_revision" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        next(wstub.WatchLeads(pb.WatchLeadsRequest(workspace_id="bad id!"), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    streams = [wstub.WatchLeads(pb.WatchLeadsRequest(), timeout=30) for _ in range(3)]
    for s in streams:
        next(s)  # a heartbeat: each holds its slot
    with pytest.raises(grpc.RpcError) as err:
        next(wstub.WatchLeads(pb.WatchLeadsRequest(), timeout=10))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Watchers hold threads of their own: unary calls still go through.
    assert wstub.GetStats(pb.GetStatsRequest(), timeout=5).total == 0
    for s in streams:
        s.cancel()


def test_a_watcher_that_reads_nothing_is_dropped_and_writers_go_on(
        wstub: sarah_pb2_grpc.SarahServiceStub, watch_server: RunningServer) -> None:
    # A small, fixed receive window: a client that reads nothing holds up the server's
    # sends after a few KiB instead of after the megabytes BDP probing would allow.
    slow = grpc.insecure_channel(f"127.0.0.1:{watch_server.port}", options=[
        ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8192)])
    stream = sarah_pb2_grpc.SarahServiceStub(slow).WatchLeads(
        pb.WatchLeadsRequest(since_revision=0), timeout=60)
    big = "x" * 400
    # Each write answers within its own deadline (a stalled writer fails with
    # DEADLINE_EXCEEDED), and every one is stored while the watcher still reads nothing.
    for i in range(200):  # ~100 KB of events: past the window and the 20-event buffer
        written = wstub.UpsertState(pb.UpsertStateRequest(
            contact_phone=_phone(i), extracted_data=pb.ExtractedData(goals=big)), timeout=10)
        assert written.extracted_data.goals == big
    assert wstub.GetStats(pb.GetStatsRequest(), timeout=10).total == 200
    with pytest.raises(grpc.RpcError) as err:
        for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "since_revision=" in err.value.details()
    slow.close()


def test_a_watcher_resumes_after_a_restart(database_url: str, tmp_path: Path) -> None:
    config = Config(listen="127.0.0.1:0", database_url=database_url, workers=1,
                    metrics_listen="")
    server = create_server(config)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE), timeout=10)
        stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=0), timeout=30)
        seen = [e.revision for e in _take(stream, 1)]
        ended = threading.Event()

        def drain() -> None:
            try:
                for _ in stream:
                    pass
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            ended.set()

        threading.Thread(target=drain, daemon=True).start()
        server.shutdown(grace=1)
        assert ended.wait(10)
    with serving(database_url) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=OTHER), timeout=10)
        stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=seen[-1]), timeout=30)
        assert [e.revision for e in _take(stream, 1)] == [2]
        stream.cancel()


def test_a_watcher_resuming_from_a_pruned_revision_gets_out_of_range(
        database_url: str) -> None:
    clock = Clock(now_us())
    with serving(database_url, clock=clock, history_days=1, housekeeping_seconds=0.05
                 ) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        for i in range(3):
            stub.UpsertState(pb.UpsertStateRequest(contact_phone=_phone(i)), timeout=10)
        clock.now += DAY_US + 1  # revisions 1-3 are now past retention
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=_phone(3)), timeout=10)
        wait_until(lambda: query(database_url, "SELECT revision, pruned_through FROM log_head")
                   == [(4, 3)], 20, "housekeeping to prune revisions 1-3")
        assert query(database_url, "SELECT revision FROM lead_event") == [(4,)]
        for since in (0, 2):
            with pytest.raises(grpc.RpcError) as err:
                next(stub.WatchLeads(pb.WatchLeadsRequest(since_revision=since), timeout=10))
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE, since
            assert "list again" in err.value.details()
        # Every event after 3 is retained: resuming there still works.
        stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=3), timeout=30)
        assert [e.revision for e in _take(stream, 1)] == [4]
        stream.cancel()
        assert stub.ListLeads(pb.ListLeadsRequest(), timeout=10).revision == 4


def test_a_stream_carries_the_version_and_a_refused_one_is_trailers_only(
        wstub: sarah_pb2_grpc.SarahServiceStub) -> None:
    """sarah-version comes in a stream's trailers; a stream refused at once (here a bad
    workspace) sends no headers before its status, the trailers-only answer Envoy's
    transcoder needs to give an HTTP error status (test_watch_retention.py)."""
    stream = wstub.WatchLeads(pb.WatchLeadsRequest(since_revision=0), timeout=30)
    wstub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE), timeout=10)
    assert [e.kind for e in _take(stream, 1)] == [pb.upserted]
    stream.cancel()
    refused = wstub.WatchLeads(pb.WatchLeadsRequest(workspace_id="bad id!"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        next(refused)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not refused.initial_metadata()
    assert ("sarah-version", VERSION) in tuple(refused.trailing_metadata())


def test_watchers_that_come_and_go_while_a_writer_writes_each_see_every_revision_once(
        database_url: str) -> None:
    # Each watcher here is the only one: the tailer skips the log while none is joined and
    # resumes from the one that joins, with commits landing all the while.
    with serving(database_url, watch_buffer=10_000) as server, \
            grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stop = threading.Event()

        def write() -> None:
            i = 0
            while not stop.is_set():  # 50 leads, each write a new score: an event each
                stub.UpsertState(pb.UpsertStateRequest(contact_phone=_phone(i % 50),
                                                       lead_score=i // 50 % 100), timeout=10)
                i += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(5):
                since = stub.GetStats(pb.GetStatsRequest(), timeout=10).revision
                stream = stub.WatchLeads(pb.WatchLeadsRequest(since_revision=since),
                                         timeout=30)
                got = [e.revision for e in _take(stream, 30)]
                stream.cancel()
                assert got == list(range(since + 1, since + 31))
                wait_until(lambda: server.hub.watching() == 0, 10, "the watcher to leave")
        finally:
            stop.set()
            writer.join()
