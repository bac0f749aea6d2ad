"""The contract's rules as plain functions, without a socket."""

import pytest

from server.core.domain import Lead, Patch
from server.core.errors import EtagMismatch, InvalidArgument
from server.core.rules import apply_patch, validate_patch

PHONE = "+6281234567890"


def _stored(**fields: object) -> Lead:
    base = {"workspace_id": "", "contact_phone": PHONE, "created_at": 1, "updated_at": 1,
            "last_message_at": 1, "etag": "e1"}
    return Lead(**{**base, **fields})


def test_create_fills_defaults_and_all_timestamps() -> None:
    lead = apply_patch(Patch(contact_phone=PHONE, lead_score=10), None, 100)
    assert (lead.state, lead.lead_score, lead.lead_temperature, lead.language) == (
        "greeting", 10, "cold", "id")
    assert lead.created_at == lead.updated_at == lead.last_message_at == 100
    assert lead.etag


def test_partial_update_keeps_other_slots() -> None:
    stored = _stored(name="Budi", business_type="restaurant", team_size=5, lead_score=40)
    lead = apply_patch(Patch(contact_phone=PHONE, team_size=8), stored, 200)
    assert (lead.name, lead.business_type, lead.team_size, lead.lead_score) == (
        "Budi", "restaurant", 8, 40)
    assert lead.created_at == 1 and lead.updated_at == 200


def test_last_message_at_moves_only_when_count_grows() -> None:
    stored = _stored(message_count=3)
    same = apply_patch(Patch(contact_phone=PHONE, message_count=3), stored, 200)
    grown = apply_patch(Patch(contact_phone=PHONE, add_messages=2), stored, 300)
    assert same.last_message_at == 1
    assert (grown.message_count, grown.last_message_at) == (5, 300)


def test_every_write_changes_the_etag() -> None:
    stored = _stored()
    assert apply_patch(Patch(contact_phone=PHONE), stored, 2).etag not in ("", "e1")


def test_stale_etag_is_refused() -> None:
    with pytest.raises(EtagMismatch):
        apply_patch(Patch(contact_phone=PHONE, etag="old"), _stored(), 2)
    # An etag of "" means "only if it does not exist yet".
    with pytest.raises(EtagMismatch):
        apply_patch(Patch(contact_phone=PHONE, etag=""), _stored(), 2)
    assert apply_patch(Patch(contact_phone=PHONE, etag=""), None, 2).etag


def test_add_messages_past_the_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        apply_patch(Patch(contact_phone=PHONE, add_messages=5), _stored(message_count=999_999), 2)


def test_validation_names_every_bad_field() -> None:
    patch = Patch(
        contact_phone="08123", workspace_id="no spaces", lead_score=101, state="asleep",
        message_count=3, add_messages=1, name="x" * 201, pain_points=("p",) * 21,
        request_id="r" * 129, team_size=-1,
    )
    with pytest.raises(InvalidArgument) as caught:
        validate_patch(patch, "ID")
    fields = {field for field, _ in caught.value.violations}
    assert fields == {
        "contact_phone", "workspace_id", "lead_score", "state", "add_messages",
        "extracted_data.name", "extracted_data.pain_points", "request_id",
        "extracted_data.team_size",
    }
