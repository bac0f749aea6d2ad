"""Who a lead is, as plain functions: keys, which lead a request means, two halves merging,
a phone number that moved, identity changes and clear."""

from typing import Any

import pytest

from server.core.domain import IdentityChange, Lead, LeadKey, Patch
from server.core.errors import InvalidArgument
from server.core.identity import Holders, meant, merge_halves, settle, upsert_plan
from server.core.rules import (
    apply_patch,
    validate_identity_change,
    validate_key,
    validate_patch,
)

PHONE = "+6281234567890"
OTHER_PHONE = "+6281298765432"
BSUID = "ID.1648738043044942"
OTHER_BSUID = "ID.999"


def _lead(phone: str = "", bsuid: str = "", **fields: object) -> Lead:
    base: dict[str, Any] = {"workspace_id": "", "contact_phone": phone,
                               "business_scoped_user_id": bsuid, "created_at": 10,
                               "updated_at": 10, "last_message_at": 10, "etag": "e"}
    return Lead(**{**base, **fields})


def _fields(exc: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {field for field, _ in exc.value.violations}


# Keys

def test_a_key_with_neither_phone_nor_bsuid_names_both() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_key("", "", "ID", raw_bsuid="  ")
    assert _fields(caught) == {"contact_phone", "business_scoped_user_id"}


@pytest.mark.parametrize("bad", ["id.123", "ID123", "IDN.1", "ID.", "ID.12-3", "ID." + "1" * 129,
                                 "ID.1\x00"])
def test_a_malformed_bsuid_names_business_scoped_user_id(bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_key(PHONE, "", "ID", raw_bsuid=bad)
    assert _fields(caught) == {"business_scoped_user_id"}


def test_a_bsuid_is_compared_after_trimming_spaces() -> None:
    assert validate_key("", "", "ID", raw_bsuid=f"  {BSUID} ") == LeadKey("", "", BSUID)
    assert validate_key("", "", "ID", raw_bsuid="ID." + "a" * 128).business_scoped_user_id


def test_a_bsuid_alone_is_a_key_and_the_phone_stays_empty() -> None:
    patch = validate_patch(Patch(contact_phone="", business_scoped_user_id=BSUID), "ID")
    assert (patch.contact_phone, patch.business_scoped_user_id) == ("", BSUID)


@pytest.mark.parametrize(("fields", "named"), [
    ({"username": "u" * 65}, "username"),
    ({"username": "bad\nname"}, "username"),
    ({"username": "bell\x07"}, "username"),
    ({"parent_business_scoped_user_id": "p" * 129}, "parent_business_scoped_user_id"),
    ({"parent_business_scoped_user_id": "ID.1 2"}, "parent_business_scoped_user_id"),
])
def test_over_long_or_odd_display_fields_are_refused(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_patch(Patch(contact_phone=PHONE, **fields), "ID")
    assert _fields(caught) == {named}


def test_display_fields_at_their_limits_are_accepted() -> None:
    patch = Patch(contact_phone=PHONE, username="ü" * 64,
                  parent_business_scoped_user_id="ID.ENT." + "a" * 128)
    assert validate_patch(patch, "ID") == patch


# Which lead a request means

def test_the_bsuid_finds_the_lead_first() -> None:
    by_bsuid, by_phone = _lead(bsuid=BSUID), _lead(phone=PHONE)
    assert meant(LeadKey("", PHONE, BSUID), Holders(by_bsuid, by_phone)) is by_bsuid


def test_without_a_bsuid_holder_the_phone_finds_the_lead() -> None:
    by_phone = _lead(phone=PHONE)
    assert meant(LeadKey("", PHONE, BSUID), Holders(None, by_phone)) is by_phone
    assert meant(LeadKey("", PHONE, ""), Holders(None, by_phone)) is by_phone


def test_a_phone_lead_with_another_bsuid_is_another_person() -> None:
    by_phone = _lead(phone=PHONE, bsuid=OTHER_BSUID)
    assert meant(LeadKey("", PHONE, BSUID), Holders(None, by_phone)) is None
    assert meant(LeadKey("", PHONE, ""), Holders(None, by_phone)) is by_phone


def test_no_holder_means_no_lead() -> None:
    assert meant(LeadKey("", PHONE, BSUID), Holders()) is None


def test_a_write_gives_the_phone_lead_its_bsuid() -> None:
    by_phone = _lead(phone=PHONE)
    plan = upsert_plan(LeadKey("", PHONE, BSUID), Holders(None, by_phone))
    assert plan.old is by_phone and not plan.absorbed and not plan.robbed
    assert plan.base is not None and plan.base.key == LeadKey("", PHONE, BSUID)


def test_a_new_lead_has_no_base() -> None:
    plan = upsert_plan(LeadKey("", "", BSUID), Holders())
    assert plan.old is None and plan.base is None


# Two halves of one person

def test_two_halves_merge_field_by_field_from_the_newer() -> None:
    bsuid_half = _lead(bsuid=BSUID, updated_at=20, lead_score=30, state="qualifying",
                       name="Budi", message_count=3, created_at=5, last_message_at=20,
                       username="budi")
    phone_half = _lead(phone=PHONE, updated_at=40, lead_score=70, state="scoring",
                       team_size=0, business_type="warung", message_count=4, created_at=1,
                       last_message_at=15, pain_points=("ongkir",))
    merged = merge_halves(bsuid_half, phone_half)
    assert merged.key == LeadKey("", PHONE, BSUID)
    assert (merged.lead_score, merged.state) == (70, "scoring")  # the newer half's
    assert (merged.name, merged.business_type, merged.team_size) == ("Budi", "warung", 0)
    assert (merged.pain_points, merged.username) == (("ongkir",), "budi")
    assert merged.message_count == 7
    assert (merged.created_at, merged.last_message_at, merged.updated_at) == (1, 20, 40)


def test_on_a_tie_the_bsuid_half_wins() -> None:
    merged = merge_halves(_lead(bsuid=BSUID, lead_score=10, updated_at=9),
                          _lead(phone=PHONE, lead_score=90, updated_at=9))
    assert merged.lead_score == 10


def test_a_write_with_both_keys_absorbs_the_phone_half() -> None:
    x, y = _lead(bsuid=BSUID, message_count=2), _lead(phone=PHONE, message_count=5)
    plan = upsert_plan(LeadKey("", PHONE, BSUID), Holders(x, y))
    assert plan.old is x and plan.absorbed == (y,) and not plan.robbed
    assert plan.base is not None and plan.base.message_count == 7
    assert plan.base.key == LeadKey("", PHONE, BSUID)


# A phone number that moved

def test_a_phone_held_by_another_bsuid_moves_to_the_lead_of_the_bsuid() -> None:
    x, y = _lead(bsuid=BSUID), _lead(phone=PHONE, bsuid=OTHER_BSUID)
    plan = upsert_plan(LeadKey("", PHONE, BSUID), Holders(x, y))
    assert plan.old is x and plan.robbed == (y,) and not plan.absorbed
    assert plan.base is not None and plan.base.contact_phone == PHONE


def test_a_moved_phone_to_a_new_bsuid_makes_a_new_lead() -> None:
    y = _lead(phone=PHONE, bsuid=OTHER_BSUID)
    plan = upsert_plan(LeadKey("", PHONE, BSUID), Holders(None, y))
    assert plan.old is None and plan.robbed == (y,)


# Identity changes

def _change(old: LeadKey, phone: str = "", bsuid: str = "") -> IdentityChange:
    return IdentityChange(old=old, new_contact_phone=phone, new_business_scoped_user_id=bsuid)


def test_a_change_needs_a_new_key() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_identity_change(_change(LeadKey("", PHONE)), "ID")
    assert _fields(caught) == {"new_contact_phone", "new_business_scoped_user_id"}


@pytest.mark.parametrize("change", [
    _change(LeadKey("", PHONE), phone="0812-3456-7890"),
    _change(LeadKey("", PHONE, BSUID), bsuid=BSUID),
    _change(LeadKey("", PHONE, BSUID), phone=PHONE, bsuid=BSUID),
])
def test_a_change_to_the_same_key_is_refused(change: IdentityChange) -> None:
    with pytest.raises(InvalidArgument):
        validate_identity_change(change, "ID")


def test_a_change_without_an_old_key_names_both() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_identity_change(_change(LeadKey(""), phone=PHONE), "ID")
    assert _fields(caught) == {"contact_phone", "business_scoped_user_id"}


def test_a_change_normalises_both_keys() -> None:
    change = validate_identity_change(_change(LeadKey("", "0812-3456-7890"), phone="6281298765432"),
                                      "ID")
    assert (change.old.contact_phone, change.new_contact_phone) == (PHONE, OTHER_PHONE)


def test_a_number_change_onto_a_phone_lead_merges_them() -> None:
    x, y = _lead(phone=PHONE, bsuid=BSUID), _lead(phone=OTHER_PHONE, message_count=4)
    plan = settle(x, OTHER_PHONE, BSUID, Holders(x, y))
    assert plan.old is x and plan.absorbed == (y,)
    assert plan.base is not None and plan.base.key == LeadKey("", OTHER_PHONE, BSUID)


def test_a_number_change_onto_another_bsuid_lead_moves_the_number() -> None:
    x, y = _lead(phone=PHONE), _lead(phone=OTHER_PHONE, bsuid=OTHER_BSUID)
    plan = settle(x, OTHER_PHONE, "", Holders(None, y))
    assert plan.robbed == (y,) and not plan.absorbed
    assert plan.base is not None and plan.base.key == LeadKey("", OTHER_PHONE, "")


def test_a_user_id_change_onto_a_lead_of_the_new_bsuid_merges_into_it() -> None:
    x, z = _lead(phone=PHONE, bsuid=BSUID), _lead(bsuid=OTHER_BSUID)
    plan = settle(x, PHONE, OTHER_BSUID, Holders(z, x))
    assert plan.old is z and plan.absorbed == (x,)
    assert plan.base is not None and plan.base.key == LeadKey("", PHONE, OTHER_BSUID)


# clear

@pytest.mark.parametrize(("path", "field", "expected"), [
    ("extracted_data.name", "name", None),
    ("extracted_data.business_type", "business_type", None),
    ("extracted_data.team_size", "team_size", None),
    ("extracted_data.pain_points", "pain_points", ()),
    ("extracted_data.goals", "goals", None),
    ("username", "username", ""),
    ("parent_business_scoped_user_id", "parent_business_scoped_user_id", ""),
])
def test_clear_resets_each_path_to_its_default(path: str, field: str, expected: object) -> None:
    stored = _lead(phone=PHONE, name="Budi", business_type="warung", team_size=3,
                   pain_points=("ongkir",), goals="grow", username="budi",
                   parent_business_scoped_user_id="ID.p")
    patch = validate_patch(Patch(contact_phone=PHONE, clear=(path,)), "ID")
    lead = apply_patch(patch, stored, 20)
    assert getattr(lead, field) == expected
    others = [f for f in ("name", "goals", "username") if f != field]
    assert all(getattr(lead, f) == getattr(stored, f) for f in others)


@pytest.mark.parametrize("patch", [
    Patch(contact_phone=PHONE, clear=("extracted_data.nope",)),
    Patch(contact_phone=PHONE, clear=("contact_phone",)),
    Patch(contact_phone=PHONE, clear=("business_scoped_user_id",)),
    Patch(contact_phone=PHONE, clear=("lead_score",)),
    Patch(contact_phone=PHONE, name="Budi", clear=("extracted_data.name",)),
    Patch(contact_phone=PHONE, pain_points=("a",), clear=("extracted_data.pain_points",)),
    Patch(contact_phone=PHONE, username="u", clear=("username",)),
    Patch(contact_phone=PHONE, clear=("username",) * 11),
])
def test_a_bad_clear_names_clear(patch: Patch) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_patch(patch, "ID")
    assert _fields(caught) == {"clear"}


def test_ten_clears_are_accepted() -> None:
    patch = Patch(contact_phone=PHONE, clear=("username",) * 10)
    assert validate_patch(patch, "ID") == patch


@pytest.mark.parametrize("paths", [("x" * 500,) * 10, ("x" * 500,) * 5000])
def test_a_bad_clear_stays_within_grpcs_status_limit(paths: tuple[str, ...]) -> None:
    # gRPC refuses a status over 8 KiB (message and details together): the caller would
    # get RESOURCE_EXHAUSTED instead of the field that is wrong.
    with pytest.raises(InvalidArgument) as caught:
        validate_patch(Patch(contact_phone=PHONE, clear=paths), "ID")
    assert _fields(caught) == {"clear"}
    assert sum(len(why) for _, why in caught.value.violations) < 2048


def test_any_number_of_bad_values_stays_within_grpcs_status_limit() -> None:
    # Not only clear: 5,000 bad pain points would be 5,000 violations.
    patch = Patch(contact_phone=PHONE, pain_points=("x\x00" * 300,) * 5000)
    with pytest.raises(InvalidArgument) as caught:
        validate_patch(patch, "ID")
    violations = caught.value.violations
    assert violations[0][0] == "extracted_data.pain_points"
    assert violations[-1][1].endswith("more problems not listed")
    assert sum(len(field) + len(why) for field, why in violations) < 4096
