"""The contract's rules as plain functions, without a socket."""

import pytest

from server.core.domain import IdentityChange, Lead, LeadKey, Patch
from server.core.errors import EtagMismatch, InvalidArgument
from server.core.rules import (
    apply_patch,
    validate_history_query,
    validate_identity_change,
    validate_key,
    validate_patch,
)

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
        message_count=3, add_messages=1, name="x" * 4097, pain_points=("p",) * 21,
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


# The limits on text (contract v1.2, "Limits on text, changed")

_LONGEST_BSUID = "US." + "A1b2" * 32  # Meta's format: 128 letters and digits after the dot
_TEXT = "Saya jual kue basah di pasar, omzet turun sejak ongkir naik. " * 67  # 4,087 chars
_SLOT_TEXT = (_TEXT + "x" * 4096)[:4096]  # WhatsApp's longest text message


def _violations(call) -> list[tuple[str, str]]:
    with pytest.raises(InvalidArgument) as caught:
        call()
    return caught.value.violations


def _by_key(bsuid: str) -> str:
    return validate_key("", "", "ID", raw_bsuid=bsuid).business_scoped_user_id


def _by_upsert(bsuid: str) -> str:
    patch = Patch(contact_phone="", business_scoped_user_id=bsuid)
    return validate_patch(patch, "ID").business_scoped_user_id


def _by_history(bsuid: str) -> str:
    return validate_history_query("", bsuid, "", 0, "ID")[0].business_scoped_user_id


def _by_new_key(bsuid: str) -> str:
    change = IdentityChange(LeadKey("", PHONE, ""), new_business_scoped_user_id=bsuid)
    return validate_identity_change(change, "ID").new_business_scoped_user_id


# Everywhere a BSUID is accepted, and the field an error names there.
_BSUID_FIELDS = [(_by_key, "business_scoped_user_id"), (_by_upsert, "business_scoped_user_id"),
                 (_by_history, "business_scoped_user_id"),
                 (_by_new_key, "new_business_scoped_user_id")]


@pytest.mark.parametrize(("check", "field"), _BSUID_FIELDS)
def test_a_bsuid_of_128_letters_and_digits_is_accepted_wherever_one_is(check, field) -> None:
    assert len(_LONGEST_BSUID) == 131
    assert check(_LONGEST_BSUID) == _LONGEST_BSUID
    assert check(f" {_LONGEST_BSUID} ") == _LONGEST_BSUID  # trimmed, as every BSUID
    assert check("ID.1") == "ID.1"


@pytest.mark.parametrize(("check", "field"), _BSUID_FIELDS)
def test_a_bsuid_of_129_letters_and_digits_is_refused_naming_the_field_and_the_rule(
        check, field: str) -> None:
    [(named, why)] = _violations(lambda: check(_LONGEST_BSUID + "9"))
    assert named == field
    assert why.startswith("must be two upper-case letters, a dot, then 1 to 128 letters and "
                          "digits (e.g. 'ID.1648738043044942'), got 'US.A1b2")


@pytest.mark.parametrize("parent", [
    "", "ID.ENT.88123", "US.ENT.506847293015824", "US.ENT." + "Z9" * 64,
    "ID.1648738043044942", _LONGEST_BSUID, "US.ENTERPRISE1", "US.ENT",
])
def test_a_parent_bsuid_is_a_bsuid_or_its_ent_form(parent: str) -> None:
    patch = Patch(contact_phone=PHONE, parent_business_scoped_user_id=parent)
    assert validate_patch(patch, "ID") == patch


@pytest.mark.parametrize("parent", [
    "US.ENT." + "Z9" * 64 + "1",  # 129 after ".ENT."
    _LONGEST_BSUID + "9",  # 129 after the dot
    "US.ENT.", "US.ENT..1", "us.ent.1", "US.ent.1", "ID.ENT.1.2", "ID.parent.1", "IDN.ENT.1",
    "ID", "ID.", ".", "1" * 129, " ID.ENT.1", "ID.ENT.1\x00", "ID.ENT.１２",
])
def test_any_other_parent_bsuid_is_refused_naming_the_field_and_the_rule(parent: str) -> None:
    [(named, why)] = _violations(lambda: validate_patch(
        Patch(contact_phone=PHONE, parent_business_scoped_user_id=parent), "ID"))
    assert named == "parent_business_scoped_user_id"
    assert why.startswith("must be a BSUID or two upper-case letters, '.ENT.', then 1 to 128 "
                          "letters and digits (e.g. 'ID.ENT.88123'), or empty, got ")


@pytest.mark.parametrize("slot", ["name", "business_type", "goals"])
def test_a_slot_a_bot_fills_takes_4096_characters_and_refuses_4097(slot: str) -> None:
    assert len(_SLOT_TEXT) == 4096
    at_limit = Patch(contact_phone=PHONE, **{slot: _SLOT_TEXT})
    assert validate_patch(at_limit, "ID") == at_limit
    assert validate_patch(Patch(contact_phone=PHONE, **{slot: "😀" * 4096}), "ID")
    [(named, why)] = _violations(lambda: validate_patch(
        Patch(contact_phone=PHONE, **{slot: _SLOT_TEXT + "."}), "ID"))
    assert (named, why) == (f"extracted_data.{slot}", "must be at most 4096 characters, got 4097")


def test_twenty_pain_points_of_4096_characters_are_accepted_and_a_4097th_is_refused() -> None:
    full = Patch(contact_phone=PHONE, pain_points=(_SLOT_TEXT,) * 20)
    assert validate_patch(full, "ID") == full
    over = Patch(contact_phone=PHONE, pain_points=("ongkir", _SLOT_TEXT + "."))
    assert _violations(lambda: validate_patch(over, "ID")) == [
        ("extracted_data.pain_points[1]", "must be at most 4096 characters, got 4097")]
    many = Patch(contact_phone=PHONE, pain_points=("ongkir",) * 21)
    assert _violations(lambda: validate_patch(many, "ID")) == [
        ("extracted_data.pain_points", "must hold at most 20 items")]


def test_a_username_stays_at_most_64_characters_its_at_sign_kept() -> None:
    at_limit = Patch(contact_phone=PHONE, username="@" + "tokobudi" * 7 + "1234567")
    assert len(at_limit.username or "") == 64
    assert validate_patch(at_limit, "ID").username == at_limit.username
    [(named, why)] = _violations(lambda: validate_patch(
        Patch(contact_phone=PHONE, username=(at_limit.username or "") + "8"), "ID"))
    assert (named, why) == ("username", "must be at most 64 characters, got 65")
