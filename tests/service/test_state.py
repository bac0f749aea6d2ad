"""GetState, UpsertState and DeleteState over real gRPC, rule by rule of the contract."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import json_format

from sarah.v1 import sarah_pb2 as pb
from tests.support.helpers import KAPSO_BODY, PHONE, get, upsert


def _upsert_json(stub, body: dict) -> dict:
    """Send a JSON body as the transcoder would parse it; return the response as JSON."""
    request = json_format.Parse(json.dumps(body), pb.UpsertStateRequest())
    conversation = stub.UpsertState(request, timeout=10)
    return json_format.MessageToDict(
        conversation, preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def test_kapso_body_round_trips_in_the_same_words(stub) -> None:
    stored = _upsert_json(stub, KAPSO_BODY)
    for key, value in KAPSO_BODY.items():
        if key != "extracted_data":
            assert stored[key] == value, key
    # Unknown slots are left out; the list is always printed, empty when unknown.
    assert stored["extracted_data"] == {**KAPSO_BODY["extracted_data"], "pain_points": []}
    assert stored["workspace_id"] == ""
    assert stored["created_at"].endswith("Z") and stored["etag"]


def test_scorer_payload_with_null_team_size_keeps_the_stored_one(stub) -> None:
    _upsert_json(stub, KAPSO_BODY)
    scorer = {
        "contact_phone": "6281234567890", "lead_score": 80, "lead_temperature": "hot",
        "extracted_data": {"team_size": None, "goals": "more bookings on weekends",
                           "pain_points": ["manual booking", "no-shows"]},
    }
    stored = _upsert_json(stub, scorer)
    assert stored["extracted_data"] == {
        "name": "Budi", "business_type": "restaurant", "team_size": 5,
        "goals": "more bookings on weekends", "pain_points": ["manual booking", "no-shows"],
    }
    assert (stored["lead_score"], stored["lead_temperature"], stored["state"]) == (
        80, "hot", "qualifying")


def test_unknown_lead_gets_the_default_which_is_not_stored(stub) -> None:
    lead = get(stub, "0812-3456-7890")
    assert lead.contact_phone == PHONE
    assert (lead.state, lead.lead_score, lead.lead_temperature, lead.language) == (
        pb.greeting, 0, pb.cold, pb.id)
    assert lead.message_count == 0 and lead.etag == ""
    assert not lead.HasField("created_at") and not lead.HasField("last_message_at")
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 0


@pytest.mark.parametrize(
    "spelling", ["0812-3456-7890", "+62 812 3456 7890", "6281234567890", "+6281234567890"]
)
def test_every_spelling_reads_and_writes_one_lead(stub, spelling: str) -> None:
    upsert(stub, contact_phone="+6281234567890", lead_score=10)
    assert get(stub, spelling).lead_score == 10
    upsert(stub, contact_phone=spelling, lead_score=20)
    assert get(stub, "+6281234567890").lead_score == 20
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 1


def test_american_number_stays_american(stub) -> None:
    assert upsert(stub, contact_phone="+14155550123").contact_phone == "+14155550123"


def test_partial_update_changes_only_present_fields(stub) -> None:
    first = upsert(stub, contact_phone=PHONE, state=pb.qualifying, lead_score=45,
                   extracted_data=pb.ExtractedData(name="Budi", team_size=5))
    second = upsert(stub, contact_phone=PHONE, language=pb.en,
                    extracted_data=pb.ExtractedData(business_type="salon"))
    assert (second.state, second.lead_score, second.language) == (pb.qualifying, 45, pb.en)
    assert (second.extracted_data.name, second.extracted_data.team_size,
            second.extracted_data.business_type) == ("Budi", 5, "salon")
    assert second.created_at == first.created_at
    assert second.updated_at.ToMicroseconds() > first.updated_at.ToMicroseconds()
    assert second.etag != first.etag


def test_last_message_at_moves_when_message_count_grows(stub) -> None:
    first = upsert(stub, contact_phone=PHONE, message_count=3)
    same = upsert(stub, contact_phone=PHONE, lead_score=5)
    grown = upsert(stub, contact_phone=PHONE, add_messages=2)
    assert same.last_message_at == first.last_message_at
    assert grown.message_count == 5
    assert grown.last_message_at.ToMicroseconds() > first.last_message_at.ToMicroseconds()


def test_etag_guards_the_write(stub) -> None:
    first = upsert(stub, contact_phone=PHONE, lead_score=10)
    upsert(stub, contact_phone=PHONE, lead_score=20, etag=first.etag)
    with pytest.raises(grpc.RpcError) as caught:
        upsert(stub, contact_phone=PHONE, lead_score=30, etag=first.etag)
    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert get(stub, PHONE).lead_score == 20


def test_two_writers_of_one_version_exactly_one_wins(stub) -> None:
    read = upsert(stub, contact_phone=PHONE)
    start = threading.Barrier(8)

    def write(score: int) -> grpc.StatusCode:
        start.wait()
        try:
            upsert(stub, contact_phone=PHONE, lead_score=score, etag=read.etag)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(write, range(1, 9)))
    assert sorted(codes, key=str) == sorted(
        [grpc.StatusCode.OK] + [grpc.StatusCode.ABORTED] * 7, key=str)
    assert get(stub, PHONE).lead_score == codes.index(grpc.StatusCode.OK) + 1


def test_request_id_retry_applies_nothing_twice(stub) -> None:
    first = upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.A1")
    upsert(stub, contact_phone=PHONE, lead_score=50)
    retry = upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.A1")
    assert retry == first
    assert get(stub, PHONE).message_count == 1
    # The same id for another lead is another request.
    other = upsert(stub, contact_phone="+14155550123", add_messages=1, request_id="wamid.A1")
    assert other.message_count == 1


def test_delete_erases_and_unknown_delete_succeeds(stub) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=70, request_id="r1")
    gone = stub.DeleteState(pb.DeleteStateRequest(contact_phone="0812-3456-7890"), timeout=10)
    assert gone.deleted is True
    assert get(stub, PHONE).etag == ""
    again = stub.DeleteState(pb.DeleteStateRequest(contact_phone=PHONE), timeout=10)
    assert again.deleted is False
    # The erased lead's request ids are gone too: the same id now writes afresh.
    assert upsert(stub, contact_phone=PHONE, add_messages=1, request_id="r1").message_count == 1


def test_workspaces_hold_separate_conversations(stub) -> None:
    upsert(stub, contact_phone=PHONE, workspace_id="toko-a", lead_score=10)
    upsert(stub, contact_phone=PHONE, workspace_id="toko_b", lead_score=90)
    assert get(stub, PHONE, "toko-a").lead_score == 10
    assert get(stub, PHONE, "toko_b").lead_score == 90
    assert get(stub, PHONE).etag == ""
