"""ListEvents and GetActivity on a real server, on both databases: a lead's history across
pages, merges, identity changes and erasure; activity counts of each kind of write; bad
input refused naming the field, with nothing written."""

import grpc
import pytest

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.core.domain import LeadKey
from server.core.pagination import encode_history_token
from tests.support.helpers import bad_fields, upsert

PHONE = "+6281234567890"
BSUID = "ID.1648738043044942"
Stub = sarah_pb2_grpc.SarahServiceStub


def _history(stub: Stub, **key: object) -> list[pb.LeadEvent]:
    return list(stub.ListEvents(pb.ListEventsRequest(**key), timeout=10).events)


def _told(events: list[pb.LeadEvent]) -> list[tuple[str, tuple[str, ...]]]:
    return [(pb.EventKind.Name(e.kind), tuple(e.changed)) for e in events]


def _totals(stub: Stub, **request: object) -> tuple[int, ...]:
    """The activity of the last two days summed (a test may run across midnight)."""
    days = stub.GetActivity(pb.GetActivityRequest(days=2, **request), timeout=10).days
    return tuple(sum(getattr(d, f) for d in days) for f in (
        "new_leads", "messages", "reached_handoff", "reached_completed", "became_hot"))


def test_history_is_newest_first_with_the_paths_each_write_changed(stub: Stub) -> None:
    upsert(stub, contact_phone="081234567890", message_count=1)
    upsert(stub, contact_phone=PHONE, state=pb.qualifying, lead_score=40)
    upsert(stub, contact_phone=PHONE, lead_temperature=pb.hot,
           extracted_data=pb.ExtractedData(name="Budi"))
    events = _history(stub, contact_phone="6281234567890")  # any spelling of the number
    assert _told(events) == [
        ("upserted", ("lead_temperature", "extracted_data.name")),
        ("upserted", ("state", "lead_score")),
        ("upserted", ("contact_phone", "message_count", "last_message_at")),
    ]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions, reverse=True)
    assert events[0].conversation.extracted_data.name == "Budi"
    assert all(e.at.seconds > 0 for e in events)


def test_pages_of_history_follow_on_without_gap_or_repeat(stub: Stub) -> None:
    for score in range(7):
        upsert(stub, contact_phone=PHONE, lead_score=score + 1)
    upsert(stub, contact_phone="+6281234567891", lead_score=50)  # another lead's event
    seen, token, pages = [], "", 0
    while True:
        page = stub.ListEvents(pb.ListEventsRequest(contact_phone=PHONE, page_size=3,
                                                    page_token=token), timeout=10)
        assert len(page.events) <= 3
        seen += [e.conversation.lead_score for e in page.events]
        pages, token = pages + 1, page.next_page_token
        if not token:
            break
    assert (seen, pages) == ([7, 6, 5, 4, 3, 2, 1], 3)


def test_history_follows_a_merge_of_a_phone_half_and_a_bsuid_half(stub: Stub) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=10)
    upsert(stub, business_scoped_user_id=BSUID, add_messages=2)
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, state=pb.scoring)
    by_phone = _history(stub, contact_phone=PHONE)
    assert by_phone == _history(stub, business_scoped_user_id=BSUID)
    assert [(pb.EventKind.Name(e.kind), e.conversation.contact_phone,
             e.conversation.business_scoped_user_id) for e in by_phone] == [
        ("upserted", PHONE, BSUID), ("deleted", PHONE, ""), ("upserted", "", BSUID),
        ("upserted", PHONE, "")]


def test_history_follows_an_identity_change(stub: Stub) -> None:
    new = "+6281299998888"
    upsert(stub, contact_phone=PHONE, lead_score=10)
    upsert(stub, contact_phone=PHONE, lead_score=20)
    stub.ChangeIdentity(pb.ChangeIdentityRequest(contact_phone=PHONE, new_contact_phone=new),
                        timeout=10)
    events = _history(stub, contact_phone=new)
    assert [e.conversation.contact_phone for e in events] == [new, PHONE, PHONE]
    assert tuple(events[0].changed) == ("contact_phone",)
    # The old number is no lead's now: its history is the events that carried it.
    assert [e.conversation.lead_score for e in _history(stub, contact_phone=PHONE)] == [20, 10]


def test_a_key_no_lead_ever_held_has_an_empty_history(stub: Stub) -> None:
    upsert(stub, contact_phone=PHONE)
    assert _history(stub, contact_phone="+6281200000000") == []
    assert _history(stub, business_scoped_user_id="ID.404", workspace_id="toko") == []


def test_after_erasure_only_the_deleted_event_remains_even_of_an_older_key(stub: Stub) -> None:
    new = "+6281299998888"
    upsert(stub, contact_phone=PHONE, extracted_data=pb.ExtractedData(name="Budi"))
    stub.ChangeIdentity(pb.ChangeIdentityRequest(contact_phone=PHONE, new_contact_phone=new),
                        timeout=10)
    upsert(stub, contact_phone=new, lead_score=60)
    stub.DeleteState(pb.DeleteStateRequest(contact_phone=new), timeout=10)
    [deleted] = _history(stub, contact_phone=new)
    assert (pb.EventKind.Name(deleted.kind), deleted.conversation.contact_phone) == (
        "deleted", new)
    assert deleted.conversation.extracted_data.name == ""  # keys only
    assert _history(stub, contact_phone=PHONE) == []  # its events under the old number too


def test_a_new_lead_after_an_erasure_has_only_its_own_history(stub: Stub) -> None:
    """SQLite hands an erased lead's row id to the next new lead: the erasure's deleted
    event must stay the erased key's, not start the newcomer's story, and erasing the
    newcomer must leave it."""
    other = "+6281299997777"
    upsert(stub, contact_phone=PHONE, extracted_data=pb.ExtractedData(name="Alice"))
    stub.DeleteState(pb.DeleteStateRequest(contact_phone=PHONE), timeout=10)
    upsert(stub, contact_phone=other, extracted_data=pb.ExtractedData(name="Bob"))
    assert [(pb.EventKind.Name(e.kind), e.conversation.contact_phone)
            for e in _history(stub, contact_phone=other)] == [("upserted", other)]
    stub.DeleteState(pb.DeleteStateRequest(contact_phone=other), timeout=10)
    assert [(pb.EventKind.Name(e.kind), e.conversation.contact_phone)
            for e in _history(stub, contact_phone=PHONE)] == [("deleted", PHONE)]
    assert [pb.EventKind.Name(e.kind) for e in _history(stub, contact_phone=other)] == [
        "deleted"]


def test_a_refused_write_or_a_request_id_retry_adds_no_event_and_no_activity(
        stub: Stub) -> None:
    first = upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.1")
    before = (_history(stub, contact_phone=PHONE), _totals(stub))
    assert upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.1") == first
    with pytest.raises(grpc.RpcError) as caught:
        upsert(stub, contact_phone=PHONE, add_messages=1, etag="stale")
    assert caught.value.code() == grpc.StatusCode.ABORTED
    with pytest.raises(grpc.RpcError):
        upsert(stub, contact_phone=PHONE, add_messages=1, lead_score=101)
    assert (_history(stub, contact_phone=PHONE), _totals(stub)) == before


def test_activity_counts_each_kind_of_write_once(stub: Stub) -> None:
    upsert(stub, contact_phone=PHONE, message_count=3)
    upsert(stub, contact_phone=PHONE, add_messages=2, state=pb.handoff)
    upsert(stub, contact_phone=PHONE, state=pb.handoff, add_messages=1)  # handoff already
    upsert(stub, contact_phone=PHONE, message_count=1)  # a decrease counts 0
    upsert(stub, contact_phone=PHONE, state=pb.completed, lead_temperature=pb.hot)
    upsert(stub, contact_phone="+6281234567891", workspace_id="toko", lead_temperature=pb.hot)
    assert _totals(stub) == (2, 6, 1, 1, 2)
    assert _totals(stub, workspace_id="") == (1, 6, 1, 1, 1)
    assert _totals(stub, workspace_id="toko") == (1, 0, 0, 0, 1)


def test_activity_survives_erasure_and_a_merge_adds_no_lead_and_no_messages(stub: Stub) -> None:
    upsert(stub, contact_phone=PHONE, message_count=2)
    upsert(stub, business_scoped_user_id=BSUID, message_count=3)
    before = _totals(stub)
    merged = upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID)
    assert merged.message_count == 5
    assert _totals(stub) == before == (2, 5, 0, 0, 0)
    stub.DeleteState(pb.DeleteStateRequest(contact_phone=PHONE), timeout=10)
    assert _totals(stub) == before


def test_activity_has_one_day_per_requested_day_ending_today(stub: Stub) -> None:
    reply = stub.GetActivity(pb.GetActivityRequest(time_zone="Asia/Kathmandu", days=7),
                             timeout=10)
    assert reply.time_zone == "Asia/Kathmandu" and len(reply.days) == 7
    default = stub.GetActivity(pb.GetActivityRequest(), timeout=10)
    assert (default.time_zone, len(default.days)) == ("Asia/Jakarta", 30)
    dates = [d.date for d in default.days]
    assert dates == sorted(dates) and len(set(dates)) == 30


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ListEventsRequest(), "contact_phone"),
    (pb.ListEventsRequest(contact_phone="08123"), "contact_phone"),
    (pb.ListEventsRequest(business_scoped_user_id="ID."), "business_scoped_user_id"),
    (pb.ListEventsRequest(contact_phone=PHONE, workspace_id="toko b"), "workspace_id"),
    (pb.ListEventsRequest(contact_phone=PHONE, page_size=-1), "page_size"),
    (pb.ListEventsRequest(contact_phone=PHONE, page_token="garbage"), "page_token"),
    (pb.ListEventsRequest(contact_phone=PHONE, page_token=encode_history_token(
        LeadKey("", "+6281234567891"), 5)), "page_token"),  # another lead's token
    (pb.GetActivityRequest(time_zone="Asia/Atlantis"), "time_zone"),
    (pb.GetActivityRequest(time_zone="asia/jakarta"), "time_zone"),
    (pb.GetActivityRequest(time_zone="../../etc/passwd"), "time_zone"),
    (pb.GetActivityRequest(days=367), "days"),
    (pb.GetActivityRequest(days=-1), "days"),
    (pb.GetActivityRequest(workspace_id="toko b"), "workspace_id"),
])
def test_bad_history_or_activity_request_is_invalid_argument_naming_the_field(
        stub: Stub, request_: object, field: str) -> None:
    upsert(stub, contact_phone=PHONE, message_count=1)
    before = (_history(stub, contact_phone=PHONE), _totals(stub))
    method = stub.ListEvents if isinstance(request_, pb.ListEventsRequest) else stub.GetActivity
    with pytest.raises(grpc.RpcError) as caught:
        method(request_, timeout=10)
    assert field in bad_fields(caught.value)
    assert (_history(stub, contact_phone=PHONE), _totals(stub)) == before


def test_a_page_size_over_500_is_capped_like_list_leads(stub: Stub) -> None:
    for score in range(3):
        upsert(stub, contact_phone=PHONE, lead_score=score)
    page = stub.ListEvents(pb.ListEventsRequest(contact_phone=PHONE, page_size=2**31 - 1),
                           timeout=10)
    assert (len(page.events), page.next_page_token) == (3, "")
