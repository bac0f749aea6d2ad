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

from client import AsyncSarahClient, RetryPolicy, SarahClient, describe, messages
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer, create_server
from server.config import Config
from tests.support.helpers import KAPSO_BODY, PHONE
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def _serve(db: Path, port: int = 0) -> RunningServer:
    return create_server(Config(listen=f"127.0.0.1:{port}", database_url=f"sqlite:///{db}"))


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
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                sarah.upsert_state(contact_phone=PHONE, lead_score=10)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - start < 2
            # Reads are not blocked by the writer, and a call's own timeout wins.
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
