"""Protobuf messages to the service's values and back, and the flat JSON they print as."""

import json

import pytest
from google.protobuf import json_format

from sarah.v1 import sarah_pb2 as pb
from server.api.convert import filter_from_proto, lead_to_proto, patch_from_proto, stats_to_proto
from server.core.domain import STATES, Lead, LeadFilter, Patch, Stats
from server.core.rules import apply_patch
from tests.support import contract_shapes as shapes
from tests.support.helpers import KAPSO_BODY, PHONE

# 2024-05-01T12:00:00.250Z, in microseconds since the epoch.
MAY_FIRST_US = 1_714_564_800_250_000


def _parsed(body: dict[str, object]) -> pb.UpsertStateRequest:
    """A JSON body as Envoy's transcoder parses it."""
    return json_format.Parse(json.dumps(body), pb.UpsertStateRequest())


def test_stored_lead_prints_as_the_flat_conversation() -> None:
    lead = Lead(workspace_id="toko", contact_phone=PHONE, state="handoff", lead_score=81,
                lead_temperature="hot", name="Budi", team_size=0, pain_points=("a", "b"),
                language="en", message_count=7, created_at=MAY_FIRST_US,
                updated_at=MAY_FIRST_US + 1, last_message_at=MAY_FIRST_US, etag="e1")
    printed = shapes.grpc_json(lead_to_proto(lead))
    shapes.check_conversation(printed)
    assert printed == {
        "contact_phone": PHONE, "workspace_id": "toko", "state": "handoff", "lead_score": 81,
        "lead_temperature": "hot", "language": "en", "message_count": 7, "etag": "e1",
        # Unknown slots are left out, a known zero is printed; the list always is.
        "extracted_data": {"name": "Budi", "team_size": 0, "pain_points": ["a", "b"]},
        "created_at": "2024-05-01T12:00:00.250Z", "updated_at": "2024-05-01T12:00:00.250001Z",
        "last_message_at": "2024-05-01T12:00:00.250Z",
        # v1.1: a lead known by phone alone prints its unknown identity fields as "".
        "business_scoped_user_id": "", "parent_business_scoped_user_id": "", "username": "",
    }


def test_default_lead_prints_without_timestamps() -> None:
    printed = shapes.grpc_json(lead_to_proto(Lead(workspace_id="", contact_phone=PHONE)))
    shapes.check_conversation(printed)
    assert printed == {
        "contact_phone": PHONE, "workspace_id": "", "state": "greeting", "lead_score": 0,
        "lead_temperature": "cold", "language": "id", "message_count": 0, "etag": "",
        "extracted_data": {"pain_points": []},
        "business_scoped_user_id": "", "parent_business_scoped_user_id": "", "username": "",
    }


def test_kapso_body_becomes_a_patch_of_exactly_its_fields() -> None:
    assert patch_from_proto(_parsed(KAPSO_BODY)) == Patch(
        contact_phone=PHONE, workspace_id="", state="qualifying", lead_score=45,
        lead_temperature="warm", name="Budi", business_type="restaurant", team_size=5,
        language="id", message_count=3)


def test_absent_and_null_fields_mean_keep() -> None:
    patch = patch_from_proto(_parsed({
        "contact_phone": PHONE, "extracted_data": {"team_size": None, "goals": "more"},
        "add_messages": 2, "etag": "e1", "request_id": "r1"}))
    assert patch == Patch(contact_phone=PHONE, goals="more", add_messages=2, etag="e1",
                          request_id="r1")
    # Zero and "" are values, not "keep".
    zeros = patch_from_proto(pb.UpsertStateRequest(
        contact_phone=PHONE, lead_score=0, message_count=0, etag="",
        extracted_data=pb.ExtractedData(name="", team_size=0)))
    assert (zeros.lead_score, zeros.message_count, zeros.etag, zeros.name, zeros.team_size) == (
        0, 0, "", "", 0)


def test_unknown_enum_numbers_stay_numbers_for_the_rules_to_refuse() -> None:
    patch = patch_from_proto(pb.UpsertStateRequest(
        contact_phone=PHONE, state=pb.State.ValueType(42),
        lead_temperature=pb.Temperature.ValueType(7), language=pb.Language.ValueType(9)))
    assert (patch.state, patch.lead_temperature, patch.language) == ("42", "7", "9")


def test_kapso_body_round_trips_in_the_same_words() -> None:
    stored = apply_patch(patch_from_proto(_parsed(KAPSO_BODY)), None, MAY_FIRST_US)
    printed = shapes.grpc_json(lead_to_proto(stored))
    shapes.check_conversation(printed)
    for key, value in KAPSO_BODY.items():
        if key != "extracted_data":
            assert printed[key] == value, key
    extracted = KAPSO_BODY["extracted_data"]
    assert isinstance(extracted, dict)
    assert printed["extracted_data"] == {**extracted, "pain_points": []}


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (pb.ListLeadsRequest(), LeadFilter()),
        (pb.ListLeadsRequest(workspace_id=""), LeadFilter(workspace_id="")),  # default, not all
        (pb.ListLeadsRequest(workspace_id="toko", temperature=pb.hot, state=pb.handoff,
                             min_score=0),
         LeadFilter(workspace_id="toko", temperature="hot", state="handoff", min_score=0)),
        (pb.ListLeadsRequest(temperature=pb.Temperature.ValueType(5)),
         LeadFilter(temperature="5")),
        (pb.GetStatsRequest(), LeadFilter()),
        (pb.GetStatsRequest(workspace_id=""), LeadFilter(workspace_id="")),
        (pb.GetStatsRequest(workspace_id="toko"), LeadFilter(workspace_id="toko")),
    ],
)
def test_filter_keeps_absent_apart_from_empty(
        request_: pb.ListLeadsRequest | pb.GetStatsRequest, expected: LeadFilter) -> None:
    assert filter_from_proto(request_) == expected


def test_stats_print_every_temperature_and_state() -> None:
    stats = Stats(total=3, by_temperature={"hot": 2, "cold": 1},
                  by_state={"greeting": 1, "handoff": 2}, avg_score=61.5)
    printed = shapes.grpc_json(stats_to_proto(stats))
    shapes.check_stats(printed)
    assert printed == {"total": 3, "hot": 2, "warm": 0, "cold": 1, "avg_score": 61.5,
                       "by_state": {s: {"greeting": 1, "handoff": 2}.get(s, 0) for s in STATES},
                       "revision": "0"}


def test_stats_of_nothing_print_as_zeros() -> None:
    printed = shapes.grpc_json(stats_to_proto(Stats()))
    shapes.check_stats(printed)
    assert printed["total"] == 0 and set(printed["by_state"].values()) == {0}
