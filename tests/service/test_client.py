"""SarahClient and AsyncSarahClient against real servers: deadlines, retries, pages, types."""

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from client import AsyncSarahClient, RetryPolicy, RevisionTooOld, SarahClient, describe, messages
from harness.ports import free_port
from harness.processes import ServerProcess
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer, create_server
from server.config import Config
from tests.support.helpers import KAPSO_BODY, PHONE
from tests.support.servers import pruned_server


def _serve(db: Path, port: int = 0) -> RunningServer:
    return create_server(Config(listen=f"127.0.0.1:{port}", database_url=f"sqlite:///{db}",
                                workers=1, metrics_listen=""))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = _serve(tmp_path / "sarah.db")
    yield running
    running.shutdown(grace=None)


@pytest.fixture
def client(server: RunningServer) -> Iterator[SarahClient]:
    with SarahClient(f"127.0.0.1:{server.port}") as sarah:
        yield sarah


def test_kapso_body_through_the_client_in_keyword_form(client: SarahClient) -> None:
    stored = client.upsert_state(**KAPSO_BODY)
    assert (stored.state, stored.lead_temperature, stored.extracted_data.name) == (
        pb.qualifying, pb.warm, "Budi")
    again = client.get_state(contact_phone="0812-3456-7890")
    assert again == stored
    with pytest.raises(TypeError, match="not both"):
        client.get_state(pb.GetStateRequest(contact_phone=PHONE), contact_phone=PHONE)


def test_default_deadline_ends_a_call_stuck_behind_the_write_lock(
    server: RunningServer, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "sarah.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the server's writes now wait for up to 5 s
    try:
        with SarahClient(f"127.0.0.1:{server.port}", timeout=0.3) as sarah:
            with pytest.raises(grpc.RpcError) as caught:
                sarah.upsert_state(contact_phone=PHONE, lead_score=10)
            # The client's deadline ended the call, not the server giving up on the lock
            # after its 5 s (that would be UNAVAILABLE): the write is still waiting.
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # Reads are not blocked by the writer, and a call's own timeout wins.
            assert sarah.get_state(contact_phone=PHONE, timeout=5).etag == ""
            assert sarah.get_stats(timeout=5).total == 0
            holder.rollback()
            # The deadline ends the wait, not the server's work: once the lock is free the
            # write lands. (Waiting for it also keeps shutdown from closing the database
            # under the still-running handler.)
            wait_until(lambda: sarah.get_state(contact_phone=PHONE).lead_score == 10, 10,
                       "the timed-out write to land", interval=0.05)
    finally:
        holder.rollback()
        holder.close()


def test_call_is_retried_until_the_server_comes_back(tmp_path: Path) -> None:
    port = free_port()
    # Without retries the closed port fails the call at once: what follows is the retries.
    with SarahClient(f"127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1)) as once:
        with pytest.raises(grpc.RpcError) as caught:
            once.get_stats()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    started: list[RunningServer] = []
    # Backoffs of up to 1 s, then 2 s: the attempts outlast the 0.3 s the server is away.
    retry = RetryPolicy(max_attempts=5, initial_backoff=1.0, max_backoff=2.0)
    with SarahClient(f"127.0.0.1:{port}", retry=retry, timeout=15) as sarah:
        later = threading.Timer(0.3, lambda: started.append(_serve(tmp_path / "s.db", port)))
        start = time.monotonic()
        later.start()
        try:
            stats = sarah.get_stats()
        finally:
            later.join()
            for running in started:
                running.shutdown(grace=None)
    assert stats.total == 0
    assert time.monotonic() - start >= 0.3


def test_iter_leads_follows_next_page_token(client: SarahClient) -> None:
    for i in range(7):
        client.upsert_state(contact_phone=f"+62812000000{i:02d}", workspace_id="pages",
                            lead_score=10 * i)
    client.upsert_state(contact_phone=PHONE, workspace_id="other", lead_score=99)
    first = client.list_leads(workspace_id="pages", page_size=3)
    assert len(first.leads) == 3 and first.next_page_token
    leads = list(client.iter_leads(workspace_id="pages", page_size=3))
    assert [lead.lead_score for lead in leads] == [60, 50, 40, 30, 20, 10, 0]
    assert len({lead.contact_phone for lead in leads}) == 7


def test_token_goes_out_as_bearer_metadata() -> None:
    seen: list[dict[str, str]] = []

    class _Recorder(sarah_pb2_grpc.SarahServiceServicer):
        def GetStats(self, request, context):  # noqa: N802
            seen.append({k: v for k, v in context.invocation_metadata()})
            return pb.GetStatsResponse()

    recorder = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(_Recorder(), recorder)
    port = recorder.add_insecure_port("127.0.0.1:0")
    recorder.start()
    try:
        with SarahClient(f"127.0.0.1:{port}", token="s3cret") as sarah:
            sarah.get_stats()
        with SarahClient(f"127.0.0.1:{port}") as anonymous:
            anonymous.get_stats()
    finally:
        recorder.stop(None)
    assert seen[0]["authorization"] == "Bearer s3cret"
    assert "authorization" not in seen[1]


def test_closed_client_refuses_calls(server: RunningServer) -> None:
    with SarahClient(f"127.0.0.1:{server.port}") as sarah:
        sarah.get_stats()
    with pytest.raises(ValueError, match="closed channel"):
        sarah.get_stats()


def test_async_client_does_what_the_blocking_one_does(server: RunningServer) -> None:
    async def scenario() -> None:
        async with AsyncSarahClient(f"127.0.0.1:{server.port}", token="t") as sarah:
            for i in range(5):
                await sarah.upsert_state(contact_phone=f"+62812000000{i:02d}", lead_score=i)
            stored = await sarah.get_state(messages.GetStateRequest(contact_phone="0812-0000-0004"))
            assert stored.lead_score == 4
            scores = [lead.lead_score async for lead in sarah.iter_leads(page_size=2)]
            assert scores == [4, 3, 2, 1, 0]
            assert (await sarah.get_stats()).total == 5
            assert (await sarah.delete_state(contact_phone="+6281200000000")).deleted
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sarah.upsert_state(contact_phone="08123", lead_score=101)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            text = describe(caught.value)
            assert "\n  contact_phone: " in text and "\n  lead_score: " in text

    asyncio.run(scenario())


def test_bsuid_keys_and_change_identity_in_both_clients(server: RunningServer) -> None:
    bsuid = "ID.1648738043044942"
    with SarahClient(f"127.0.0.1:{server.port}") as sarah:
        stored = sarah.upsert_state(business_scoped_user_id=bsuid, username="tokosari",
                                    lead_score=40)
        assert (stored.contact_phone, stored.business_scoped_user_id) == ("", bsuid)
        assert sarah.get_state(business_scoped_user_id=bsuid) == stored
        moved = sarah.change_identity(messages.ChangeIdentityRequest(
            business_scoped_user_id=bsuid, new_contact_phone="0812-3456-7890"))
        assert (moved.contact_phone, moved.business_scoped_user_id) == (PHONE, bsuid)
        with pytest.raises(grpc.RpcError) as caught:
            sarah.change_identity(business_scoped_user_id="ID.404",
                                  new_business_scoped_user_id="ID.405")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    async def scenario() -> None:
        async with AsyncSarahClient(f"127.0.0.1:{server.port}") as sarah:
            renamed = await sarah.change_identity(business_scoped_user_id=bsuid,
                                                  new_business_scoped_user_id="ID.77")
            assert (renamed.business_scoped_user_id, renamed.lead_score) == ("ID.77", 40)
            assert (await sarah.delete_state(business_scoped_user_id="ID.77")).deleted

    asyncio.run(scenario())


# WatchLeads: resuming, skipping nothing, repeating nothing.

_FAST_RETRY = RetryPolicy(initial_backoff=0.1, max_backoff=0.5)


class _Watcher:
    """client.watch() read on a thread of its own into `events`, until the test ends it."""

    def __init__(self, client: SarahClient, since_revision: int) -> None:
        self.events: list[pb.LeadEvent] = []
        self._since = since_revision
        self.error: BaseException | None = None
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._client.watch(since_revision=self._since):
                self.events.append(event)
                if self._stop.is_set():
                    return
        except BaseException as failed:  # noqa: BLE001 - handed to the test thread
            self.error = failed

    def wait_for(self, count: int, timeout: float = 20) -> list[pb.LeadEvent]:
        def arrived() -> bool:
            if self.error is not None:
                raise AssertionError(f"the watch failed: {self.error!r}")
            return len(self.events) >= count

        wait_until(arrived, timeout, f"{count} watched events", interval=0.05)
        return list(self.events)


def _scores(events: list[pb.LeadEvent]) -> list[tuple[str, int]]:
    return [(e.conversation.contact_phone, e.conversation.lead_score) for e in events]


def test_watch_resumes_after_a_server_restart_with_no_gap_and_no_repeat(tmp_path: Path) -> None:
    port = free_port()
    args = ("--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite:///{tmp_path / 's.db'}")
    proc = ServerProcess(*args)
    written: list[tuple[str, int]] = []

    def write(sarah: SarahClient, count: int) -> None:
        for _ in range(count):
            lead = (f"+6281200000{len(written):03d}", len(written))
            sarah.upsert_state(contact_phone=lead[0], lead_score=lead[1])
            written.append(lead)

    try:
        with SarahClient(proc.target, retry=_FAST_RETRY) as watching, \
                SarahClient(proc.target) as writer:
            # From a known revision: the watch's own "now" would race with the writes.
            watcher = _Watcher(watching, writer.get_stats().revision)
            write(writer, 3)
            watcher.wait_for(3)
            proc.stop()
            proc = ServerProcess(*args)
            # Written while the watcher is still waiting to reconnect: the gap a resume from
            # "now" would leave.
            write(writer, 3)
            watcher.wait_for(6)
            write(writer, 2)
            events = watcher.wait_for(8)
            time.sleep(0.3)  # room for a repeat to show
            events = list(watcher.events)
    finally:
        proc.stop()
    assert _scores(events) == written
    revisions = [event.revision for event in events]
    assert revisions == sorted(set(revisions)), "revisions repeat or go back"
    assert {event.kind for event in events} == {pb.upserted}
    assert all(event.changed and event.HasField("at") for event in events)


def test_watch_from_a_listed_revision_sees_later_changes_and_deletions(
    client: SarahClient,
) -> None:
    client.upsert_state(contact_phone=PHONE, lead_score=10)
    client.upsert_state(contact_phone="+6281200000009", lead_score=1)
    listed = client.list_leads()
    assert listed.revision > 0 and len(listed.leads) == 2
    client.upsert_state(contact_phone=PHONE, lead_score=20, state=pb.qualifying)
    client.upsert_state(contact_phone="+6281299990000", workspace_id="other", lead_score=5)
    assert client.delete_state(contact_phone="+6281200000009").deleted
    events = client.watch(workspace_id="", since_revision=listed.revision)
    changed, deleted = next(events), next(events)
    events.close()
    assert (changed.kind, changed.conversation.lead_score) == (pb.upserted, 20)
    assert {"lead_score", "state"} <= set(changed.changed)
    assert (deleted.kind, deleted.conversation.contact_phone) == (pb.deleted, "+6281200000009")
    assert listed.revision < changed.revision < deleted.revision


def test_watch_of_a_pruned_revision_says_to_list_again(tmp_path: Path) -> None:
    running = pruned_server(tmp_path / "s.db")
    try:
        with SarahClient(f"127.0.0.1:{running.port}") as sarah:
            with pytest.raises(RevisionTooOld) as caught:
                next(iter(sarah.watch(since_revision=1)))
            assert caught.value.revision == 1
            assert str(caught.value).startswith(
                "OUT_OF_RANGE: the events after revision 1 are no longer retained (")
            assert "list the leads again" in str(caught.value)
            # From the revision a list returns, the watch starts.
            listed = sarah.list_leads()
            events = sarah.watch(since_revision=listed.revision)
            sarah.upsert_state(contact_phone=PHONE, lead_score=4)
            assert next(events).conversation.lead_score == 4
            events.close()
    finally:
        running.shutdown(grace=None)


def test_async_watch_sees_changes_made_by_another_client(server: RunningServer) -> None:
    target = f"127.0.0.1:{server.port}"

    async def scenario() -> list[pb.LeadEvent]:
        async with AsyncSarahClient(target) as sarah:
            stream = sarah.watch(since_revision=(await sarah.get_stats()).revision)
            first = asyncio.ensure_future(anext(stream))
            with SarahClient(target) as writer:
                await asyncio.sleep(0.2)  # the stream opens first, or it is resumed: either works
                await asyncio.to_thread(writer.upsert_state, contact_phone=PHONE, lead_score=1)
                await asyncio.to_thread(writer.upsert_state, contact_phone=PHONE, lead_score=2)
            events = [await asyncio.wait_for(first, 10),
                      await asyncio.wait_for(anext(stream), 10)]
            await stream.aclose()
            return events

    events = asyncio.run(scenario())
    assert _scores(events) == [(PHONE, 1), (PHONE, 2)]


class _ScriptedWatch(sarah_pb2_grpc.SarahServiceServicer):
    """A WatchLeads that drops its first stream, repeats an event on the second and then
    says the log is compacted: what a real server does only by chance."""

    def __init__(self) -> None:
        self.since: list[int | None] = []

    def GetStats(self, request, context):  # noqa: N802
        return pb.GetStatsResponse(revision=7)

    def WatchLeads(self, request, context):  # noqa: N802
        self.since.append(request.since_revision if request.HasField("since_revision")
                          else None)
        if len(self.since) == 1:
            yield pb.LeadEvent(revision=8)
            yield pb.LeadEvent(revision=9, kind=pb.heartbeat)
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        yield pb.LeadEvent(revision=9)  # a repeat of what came before the drop
        yield pb.LeadEvent(revision=10)
        context.abort(grpc.StatusCode.OUT_OF_RANGE, "revision 10 is compacted")


@pytest.fixture
def scripted_watch() -> Iterator[tuple[_ScriptedWatch, int]]:
    """A grpc server whose WatchLeads follows _ScriptedWatch, and its port."""
    scripted = _ScriptedWatch()
    fake = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(scripted, fake)
    port = fake.add_insecure_port("127.0.0.1:0")
    fake.start()
    yield scripted, port
    fake.stop(None)


def test_watch_skips_repeats_and_filters_heartbeats_across_a_resume(
        scripted_watch: tuple[_ScriptedWatch, int]) -> None:
    scripted, port = scripted_watch
    seen: list[tuple[int, int]] = []
    with SarahClient(f"127.0.0.1:{port}", retry=_FAST_RETRY) as sarah:
        with pytest.raises(RevisionTooOld, match="after revision 10"):
            for event in sarah.watch():
                seen.append((event.revision, event.kind))
        scripted.since.clear()
        with pytest.raises(RevisionTooOld):
            for event in sarah.watch(since_revision=3, heartbeats=True):
                seen.append((event.revision, event.kind))
    # Pinned to GetStats' revision 7, resumed after the heartbeat's 9; 9 is not repeated.
    assert seen[:2] == [(8, pb.upserted), (10, pb.upserted)]
    assert seen[2:] == [(8, pb.upserted), (9, pb.heartbeat), (10, pb.upserted)]
    assert scripted.since == [3, 9]


def test_async_watch_skips_repeats_and_filters_heartbeats_across_a_resume(
        scripted_watch: tuple[_ScriptedWatch, int]) -> None:
    """The same script as the sync client's: AsyncSarahClient.watch has its own loop."""
    scripted, port = scripted_watch
    seen: list[tuple[int, int]] = []

    async def scenario() -> None:
        async with AsyncSarahClient(f"127.0.0.1:{port}", retry=_FAST_RETRY) as sarah:
            with pytest.raises(RevisionTooOld, match="after revision 10"):
                async for event in sarah.watch():
                    seen.append((event.revision, event.kind))
            scripted.since.clear()
            with pytest.raises(RevisionTooOld):
                async for event in sarah.watch(since_revision=3, heartbeats=True):
                    seen.append((event.revision, event.kind))

    asyncio.run(asyncio.wait_for(scenario(), 60))  # a hang guard only
    assert seen[:2] == [(8, pb.upserted), (10, pb.upserted)]
    assert seen[2:] == [(8, pb.upserted), (9, pb.heartbeat), (10, pb.upserted)]
    assert scripted.since == [3, 9]


def test_async_watch_resumes_after_a_server_restart_with_no_gap_and_no_repeat(
        tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "sarah.db"
    servers = [_serve(db, port)]
    target = f"127.0.0.1:{port}"
    written: list[tuple[str, int]] = []

    def write(count: int) -> None:
        with SarahClient(target, retry=_FAST_RETRY) as writer:
            for _ in range(count):
                lead = (f"+6281200000{len(written):03d}", len(written))
                writer.upsert_state(contact_phone=lead[0], lead_score=lead[1])
                written.append(lead)

    def restart() -> None:
        servers[-1].shutdown(grace=None)  # the watcher's connection drops
        servers.append(_serve(db, port))

    async def scenario() -> list[pb.LeadEvent]:
        events: list[pb.LeadEvent] = []
        async with AsyncSarahClient(target, retry=_FAST_RETRY) as sarah:
            stream = sarah.watch(since_revision=(await sarah.get_stats()).revision)

            async def take(n: int) -> None:
                while len(events) < n:
                    events.append(await asyncio.wait_for(anext(stream), 30))

            await asyncio.to_thread(write, 3)
            await take(3)
            await asyncio.to_thread(restart)
            # Written before the watcher reconnects: the gap a resume from "now" would leave.
            await asyncio.to_thread(write, 3)
            await take(6)
            await asyncio.to_thread(write, 2)
            # One more write: were any event repeated, the repeat would arrive before it.
            await asyncio.to_thread(write, 1)
            await take(9)
            await stream.aclose()
        return events

    try:
        events = asyncio.run(scenario())
    finally:
        servers[-1].shutdown(grace=None)
    assert _scores(events) == written
    revisions = [event.revision for event in events]
    assert revisions == sorted(set(revisions)), "revisions repeat or go back"


def test_list_events_pages_and_iter_events_follows_them(client: SarahClient) -> None:
    for score in range(5):
        client.upsert_state(contact_phone=PHONE, lead_score=score)
    client.upsert_state(contact_phone="+6281200000001", lead_score=99)  # another lead
    first = client.list_events(contact_phone="0812-3456-7890", page_size=2)
    assert [event.conversation.lead_score for event in first.events] == [4, 3]
    assert first.next_page_token
    events = list(client.iter_events(messages.ListEventsRequest(contact_phone=PHONE,
                                                                page_size=2)))
    assert [event.conversation.lead_score for event in events] == [4, 3, 2, 1, 0]
    revisions = [event.revision for event in events]
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == 5
    assert {event.kind for event in events} == {pb.upserted}
    assert list(events[0].changed) == ["lead_score"]
    with pytest.raises(grpc.RpcError) as caught:
        client.list_events(page_size=2)  # no key
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_activity_defaults_and_zones(client: SarahClient) -> None:
    client.upsert_state(contact_phone=PHONE, message_count=3)
    client.upsert_state(contact_phone=PHONE, add_messages=2, workspace_id="w")
    month = client.get_activity()
    assert (month.time_zone, len(month.days)) == ("Asia/Jakarta", 30)
    dates = [day.date for day in month.days]
    assert dates == sorted(dates) and len(set(dates)) == 30
    # Two days, so that a run across midnight in Jayapura still counts every write.
    two = client.get_activity(time_zone="Asia/Jayapura", days=2)
    assert two.time_zone == "Asia/Jayapura" and len(two.days) == 2
    assert (sum(day.new_leads for day in two.days), sum(day.messages for day in two.days)) == (
        2, 5)
    only_w = client.get_activity(workspace_id="w", days=2)
    assert sum(day.messages for day in only_w.days) == 2
    with pytest.raises(grpc.RpcError) as caught:
        client.get_activity(time_zone="Asia/Atlantis")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "\n  time_zone: " in describe(caught.value)


def test_async_client_lists_events_and_activity(server: RunningServer) -> None:
    async def scenario() -> None:
        async with AsyncSarahClient(f"127.0.0.1:{server.port}") as sarah:
            for score in range(3):
                await sarah.upsert_state(business_scoped_user_id="ID.77", lead_score=score,
                                         message_count=score)
            page = await sarah.list_events(business_scoped_user_id="ID.77", page_size=1)
            assert [event.conversation.lead_score for event in page.events] == [2]
            scores = [event.conversation.lead_score
                      async for event in sarah.iter_events(business_scoped_user_id="ID.77",
                                                           page_size=2)]
            assert scores == [2, 1, 0]
            activity = await sarah.get_activity(time_zone="Asia/Makassar", days=2)
            assert activity.time_zone == "Asia/Makassar"
            assert sum(day.messages for day in activity.days) == 2
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sarah.get_activity(days=367)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "\n  days: " in describe(caught.value)

    asyncio.run(scenario())
