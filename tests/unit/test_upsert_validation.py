"""UpsertState's validation table, moved from tests/service/test_errors.py: each bad request
(as the servicer translates it, api/convert.py) names every bad field with a reason, and
writes nothing. Over the in-memory store, no socket; test_errors.py keeps cases through
gRPC that prove the mapping of the same violations to BadRequest details."""

import pytest

from sarah.v1 import sarah_pb2 as pb
from server.api.convert import patch_from_proto
from server.core.domain import LeadFilter, Patch
from server.core.errors import InvalidArgument
from server.core.service import SarahService
from tests.support.helpers import PHONE
from tests.support.memory_store import MemoryStore

LONG = "x" * 4097  # a slot holds up to 4,096 characters


@pytest.fixture
def service() -> SarahService:
    return SarahService(MemoryStore())


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"contact_phone": "08123"}, {"contact_phone"}),
        # v1.1: with neither key, the error names both.
        ({"contact_phone": ""}, {"contact_phone", "business_scoped_user_id"}),
        ({"contact_phone": PHONE, "lead_score": 101}, {"lead_score"}),
        ({"contact_phone": PHONE, "lead_score": -1}, {"lead_score"}),
        ({"contact_phone": PHONE, "message_count": -1}, {"message_count"}),
        ({"contact_phone": PHONE, "message_count": 1_000_001}, {"message_count"}),
        ({"contact_phone": PHONE, "add_messages": 0}, {"add_messages"}),
        ({"contact_phone": PHONE, "add_messages": 1001}, {"add_messages"}),
        ({"contact_phone": PHONE, "message_count": 3, "add_messages": 1}, {"add_messages"}),
        ({"contact_phone": PHONE, "workspace_id": "w" * 65}, {"workspace_id"}),
        ({"contact_phone": PHONE, "workspace_id": "toko a"}, {"workspace_id"}),
        ({"contact_phone": PHONE, "request_id": "r" * 129}, {"request_id"}),
        ({"contact_phone": PHONE, "state": 42}, {"state"}),
        ({"contact_phone": PHONE, "lead_temperature": 7}, {"lead_temperature"}),
        ({"contact_phone": PHONE, "language": 9}, {"language"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(name="n" * 4097)},
         {"extracted_data.name"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(business_type="b" * 4097)},
         {"extracted_data.business_type"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(goals=LONG)},
         {"extracted_data.goals"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(team_size=-5)},
         {"extracted_data.team_size"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(pain_points=["p"] * 21)},
         {"extracted_data.pain_points"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(pain_points=["ok", LONG])},
         {"extracted_data.pain_points[1]"}),
        ({"contact_phone": "08123", "lead_score": 500, "workspace_id": "a b"},
         {"contact_phone", "lead_score", "workspace_id"}),
    ],
)
def test_invalid_upsert_names_each_bad_field_and_writes_nothing(
        service: SarahService, fields: dict[str, object], named: set[str]) -> None:
    service.upsert_state(Patch(contact_phone=PHONE, lead_score=33))
    with pytest.raises(InvalidArgument) as caught:
        service.upsert_state(patch_from_proto(pb.UpsertStateRequest(**fields)))
    violations = caught.value.violations
    assert {field for field, _ in violations} == named
    assert all(why for _, why in violations)  # each with its reason
    assert service.get_state(PHONE, "").lead_score == 33
    assert service.get_stats(LeadFilter()).total == 1
