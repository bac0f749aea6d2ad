"""Who a lead is, over real gRPC on both databases: BSUID-only leads, both keys, two halves
merging, a phone number that moved, ChangeIdentity and clear (contract v1.1)."""

import grpc
import pytest

from sarah.v1 import sarah_pb2 as pb
from tests.support.helpers import PHONE, bad_fields, upsert

BSUID = "ID.1648738043044942"
OTHER_BSUID = "ID.2000000000000001"
OTHER_PHONE = "+6281298765432"


def _get(stub, phone: str = "", bsuid: str = "", workspace: str = "") -> pb.Conversation:
    return stub.GetState(pb.GetStateRequest(contact_phone=phone, business_scoped_user_id=bsuid,
                                            workspace_id=workspace), timeout=10)


def _delete(stub, phone: str = "", bsuid: str = "") -> bool:
    return stub.DeleteState(pb.DeleteStateRequest(
        contact_phone=phone, business_scoped_user_id=bsuid), timeout=10).deleted


def _change(stub, **fields: object) -> pb.Conversation:
    return stub.ChangeIdentity(pb.ChangeIdentityRequest(**fields), timeout=10)


def _all_leads(stub, **fields: object) -> list[pb.Conversation]:
    leads, token = [], ""
    while True:
        page = stub.ListLeads(pb.ListLeadsRequest(page_token=token, **fields), timeout=10)
        leads.extend(page.leads)
        token = page.next_page_token
        if not token:
            return leads


def _total(stub) -> int:
    return stub.GetStats(pb.GetStatsRequest(), timeout=10).total


def test_a_lead_known_only_by_bsuid_is_created_read_updated_and_erased(stub) -> None:
    created = upsert(stub, business_scoped_user_id=BSUID, lead_score=20, username="budi",
                     parent_business_scoped_user_id="ID.ENT.1", add_messages=1)
    assert (created.contact_phone, created.business_scoped_user_id) == ("", BSUID)
    assert (created.username, created.parent_business_scoped_user_id) == ("budi", "ID.ENT.1")
    upsert(stub, business_scoped_user_id=f" {BSUID} ", lead_score=60)  # trimmed
    read = _get(stub, bsuid=BSUID)
    assert (read.lead_score, read.username, read.message_count) == (60, "budi", 1)
    assert _total(stub) == 1
    assert _delete(stub, bsuid=BSUID) is True
    assert _get(stub, bsuid=BSUID).etag == "" and _total(stub) == 0


def test_an_unknown_bsuid_reads_as_the_default_under_that_key(stub) -> None:
    lead = _get(stub, bsuid=BSUID)
    assert (lead.business_scoped_user_id, lead.contact_phone, lead.etag) == (BSUID, "", "")


def test_a_lead_with_both_keys_is_found_by_either(stub) -> None:
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, lead_score=44)
    assert _get(stub, phone=PHONE).lead_score == 44
    assert _get(stub, bsuid=BSUID).lead_score == 44
    assert _get(stub, phone="0812-3456-7890", bsuid=BSUID).business_scoped_user_id == BSUID


def test_the_bsuid_finds_the_lead_before_the_phone(stub) -> None:
    upsert(stub, business_scoped_user_id=BSUID, lead_score=10)
    upsert(stub, contact_phone=OTHER_PHONE, business_scoped_user_id=OTHER_BSUID, lead_score=90)
    # The phone names another person's lead; the BSUID wins (and the phone moves, below).
    assert _get(stub, phone=OTHER_PHONE, bsuid=BSUID).lead_score == 10


def test_a_read_by_phone_of_a_lead_with_another_bsuid_is_the_default(stub) -> None:
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=OTHER_BSUID, lead_score=90)
    lead = _get(stub, phone=PHONE, bsuid=BSUID)
    assert lead.etag == "" and lead.lead_score == 0


def test_a_phone_lead_gets_the_bsuid_of_a_write(stub) -> None:
    first = upsert(stub, contact_phone=PHONE, lead_score=30, add_messages=2)
    second = upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, add_messages=1)
    assert second.business_scoped_user_id == BSUID and second.created_at == first.created_at
    assert _get(stub, bsuid=BSUID).message_count == 3
    assert _total(stub) == 1


def test_two_halves_of_one_person_merge_into_one_lead(stub) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=70, state=pb.scoring, add_messages=4,
           extracted_data=pb.ExtractedData(business_type="warung", pain_points=["ongkir"]))
    phone_half = _get(stub, phone=PHONE)
    upsert(stub, business_scoped_user_id=BSUID, lead_score=30, add_messages=3, username="budi",
           extracted_data=pb.ExtractedData(name="Budi"))
    bsuid_half = _get(stub, bsuid=BSUID)
    assert _total(stub) == 2
    merged = upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID)
    assert (merged.contact_phone, merged.business_scoped_user_id) == (PHONE, BSUID)
    # The BSUID half was written last, so its fields win; slots only one half has are kept.
    assert (merged.lead_score, merged.state) == (30, pb.greeting)
    data = merged.extracted_data
    assert (data.name, data.business_type, list(data.pain_points)) == (
        "Budi", "warung", ["ongkir"])
    assert merged.username == "budi"
    assert merged.message_count == 7
    assert merged.created_at == phone_half.created_at
    assert merged.last_message_at == bsuid_half.last_message_at
    assert [lead.business_scoped_user_id for lead in _all_leads(stub)] == [BSUID]
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert (stats.total, stats.cold, stats.by_state.greeting, stats.avg_score) == (1, 1, 1, 30)


def test_a_phone_held_by_another_bsuid_moves_to_the_writer(stub) -> None:
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=OTHER_BSUID, lead_score=80,
           lead_temperature=pb.hot)
    upsert(stub, business_scoped_user_id=BSUID, lead_score=20)
    moved = upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID)
    assert (moved.contact_phone, moved.lead_score) == (PHONE, 20)
    other = _get(stub, bsuid=OTHER_BSUID)
    assert (other.contact_phone, other.lead_score, other.lead_temperature) == ("", 80, pb.hot)
    assert _get(stub, phone=PHONE).business_scoped_user_id == BSUID
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert (stats.total, stats.hot, stats.cold) == (2, 1, 1)


def test_a_recycled_number_for_a_new_bsuid_starts_a_new_lead(stub) -> None:
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=OTHER_BSUID, lead_score=80)
    fresh = upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID)
    assert (fresh.lead_score, fresh.contact_phone) == (0, PHONE)
    assert _get(stub, bsuid=OTHER_BSUID).contact_phone == ""
    assert _total(stub) == 2


def test_a_number_change_moves_the_lead_to_the_new_phone(stub) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=55)
    changed = _change(stub, contact_phone=PHONE, new_contact_phone="0812-9876-5432")
    assert (changed.contact_phone, changed.lead_score) == (OTHER_PHONE, 55)
    assert _get(stub, phone=PHONE).etag == ""
    assert _get(stub, phone=OTHER_PHONE).lead_score == 55 and _total(stub) == 1


def test_a_user_id_change_moves_the_lead_to_the_new_bsuid(stub) -> None:
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, lead_score=55)
    changed = _change(stub, business_scoped_user_id=BSUID,
                      new_business_scoped_user_id=OTHER_BSUID)
    assert (changed.business_scoped_user_id, changed.contact_phone) == (OTHER_BSUID, PHONE)
    assert _get(stub, bsuid=BSUID).etag == ""
    assert _get(stub, bsuid=OTHER_BSUID).lead_score == 55


def test_a_number_change_onto_a_phone_only_lead_merges_them(stub) -> None:
    upsert(stub, contact_phone=OTHER_PHONE, add_messages=2, lead_score=10)
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, add_messages=3,
           lead_score=40)
    merged = _change(stub, business_scoped_user_id=BSUID, new_contact_phone=OTHER_PHONE)
    assert (merged.contact_phone, merged.business_scoped_user_id) == (OTHER_PHONE, BSUID)
    assert (merged.message_count, merged.lead_score) == (5, 40)
    assert _get(stub, phone=PHONE).etag == ""
    assert len(_all_leads(stub)) == 1 and _total(stub) == 1


def test_a_number_change_onto_another_bsuid_moves_the_number(stub) -> None:
    upsert(stub, contact_phone=OTHER_PHONE, business_scoped_user_id=OTHER_BSUID, lead_score=80)
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, lead_score=40)
    moved = _change(stub, business_scoped_user_id=BSUID, new_contact_phone=OTHER_PHONE)
    assert (moved.contact_phone, moved.lead_score) == (OTHER_PHONE, 40)
    assert _get(stub, bsuid=OTHER_BSUID).contact_phone == ""
    assert _total(stub) == 2


def test_a_change_that_already_happened_returns_the_lead_and_writes_nothing(stub) -> None:
    upsert(stub, contact_phone=OTHER_PHONE, lead_score=55)
    before = _get(stub, phone=OTHER_PHONE)
    again = _change(stub, contact_phone=PHONE, new_contact_phone=OTHER_PHONE)
    assert again == before


def test_a_change_of_an_unknown_lead_is_not_found_and_writes_nothing(stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _change(stub, contact_phone=PHONE, new_business_scoped_user_id=BSUID)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _total(stub) == 0


@pytest.mark.parametrize(("fields", "named"), [
    ({"contact_phone": PHONE, "new_contact_phone": "0812-3456-7890"}, {"new_contact_phone"}),
    ({"contact_phone": PHONE}, {"new_contact_phone", "new_business_scoped_user_id"}),
    ({"new_contact_phone": PHONE}, {"contact_phone", "business_scoped_user_id"}),
    ({"contact_phone": PHONE, "new_business_scoped_user_id": "id.bad"},
     {"new_business_scoped_user_id"}),
])
def test_a_bad_change_names_the_field_and_writes_nothing(stub, fields, named) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=33)
    with pytest.raises(grpc.RpcError) as caught:
        _change(stub, **fields)
    assert bad_fields(caught.value) == named
    assert _get(stub, phone=PHONE).lead_score == 33


def test_a_change_retried_with_its_request_id_returns_the_first_result(stub) -> None:
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID)
    first = _change(stub, business_scoped_user_id=BSUID, new_contact_phone=OTHER_PHONE,
                    request_id="chg-1")
    again = _change(stub, business_scoped_user_id=BSUID, new_contact_phone=OTHER_PHONE,
                    request_id="chg-1")
    assert again == first


_FULL = {
    "contact_phone": PHONE, "username": "budi", "parent_business_scoped_user_id": "ID.p",
    "extracted_data": pb.ExtractedData(name="Budi", business_type="warung", team_size=4,
                                       pain_points=["ongkir"], goals="grow"),
}


# Each clearable path, and whether a conversation holds a value there.
_CLEAR_READS = [
    ("extracted_data.name", lambda c: c.extracted_data.HasField("name")),
    ("extracted_data.business_type", lambda c: c.extracted_data.HasField("business_type")),
    ("extracted_data.team_size", lambda c: c.extracted_data.HasField("team_size")),
    ("extracted_data.pain_points", lambda c: bool(c.extracted_data.pain_points)),
    ("extracted_data.goals", lambda c: c.extracted_data.HasField("goals")),
    ("username", lambda c: bool(c.username)),
    ("parent_business_scoped_user_id", lambda c: bool(c.parent_business_scoped_user_id)),
]


@pytest.mark.parametrize(("path", "read"), _CLEAR_READS)
def test_clear_resets_one_path_and_keeps_the_rest(stub, path, read) -> None:
    upsert(stub, **_FULL)
    cleared = upsert(stub, contact_phone=PHONE, clear=[path])
    assert not read(cleared)
    assert not read(_get(stub, phone=PHONE))
    kept = [r for p, r in _CLEAR_READS if p != path]
    assert all(r(cleared) for r in kept)


@pytest.mark.parametrize("fields", [
    {"clear": ["extracted_data.nope"]},
    {"clear": ["contact_phone"]},
    {"clear": ["business_scoped_user_id"]},
    {"clear": ["extracted_data.name"], "extracted_data": pb.ExtractedData(name="Budi")},
    {"clear": ["username"], "username": "x"},
    {"clear": ["username"] * 11},
])
def test_a_bad_clear_names_clear_and_writes_nothing(stub, fields) -> None:
    upsert(stub, **_FULL)
    with pytest.raises(grpc.RpcError) as caught:
        upsert(stub, contact_phone=PHONE, **fields)
    assert bad_fields(caught.value) == {"clear"}
    assert _get(stub, phone=PHONE).username == "budi"


@pytest.mark.parametrize(("fields", "named"), [
    ({"business_scoped_user_id": "id.123"}, {"business_scoped_user_id"}),
    ({"business_scoped_user_id": BSUID, "username": "u" * 65}, {"username"}),
    ({"business_scoped_user_id": BSUID, "username": "a\tb"}, {"username"}),
    ({"business_scoped_user_id": BSUID, "parent_business_scoped_user_id": "US.ENT." + "1" * 129},
     {"parent_business_scoped_user_id"}),
    ({}, {"contact_phone", "business_scoped_user_id"}),
])
def test_bad_identity_fields_name_the_field_and_write_nothing(stub, fields, named) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        upsert(stub, **fields)
    assert bad_fields(caught.value) == named
    assert _total(stub) == 0


def test_a_request_id_of_a_bsuid_lead_is_answered_once(stub) -> None:
    first = upsert(stub, business_scoped_user_id=BSUID, add_messages=1, request_id="wamid.1")
    again = upsert(stub, business_scoped_user_id=BSUID, add_messages=1, request_id="wamid.1")
    assert again == first and _get(stub, bsuid=BSUID).message_count == 1


def test_erasing_by_either_key_erases_the_whole_lead_and_its_request_ids(stub) -> None:
    upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.phone")
    upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, add_messages=1,
           request_id="wamid.both")
    assert _delete(stub, bsuid=BSUID) is True
    assert _get(stub, phone=PHONE).etag == "" and _total(stub) == 0
    # The request records went with it: the same request_ids apply afresh.
    again = upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.phone")
    assert again.message_count == 1 and again.business_scoped_user_id == ""
    assert upsert(stub, contact_phone=PHONE, business_scoped_user_id=BSUID, add_messages=1,
                  request_id="wamid.both").message_count == 2


def test_pages_of_leads_without_phones_list_each_lead_once(stub) -> None:
    for i in range(7):
        upsert(stub, business_scoped_user_id=f"ID.{i}", lead_score=50)
        upsert(stub, contact_phone=f"+6281234560{i:03d}", lead_score=50)
    listed = _all_leads(stub, page_size=3)
    keys = [(c.contact_phone, c.business_scoped_user_id) for c in listed]
    assert len(keys) == len(set(keys)) == 14
    assert keys == sorted(keys, reverse=True)


def test_a_v1_call_sees_v1_behaviour_plus_empty_new_keys(stub) -> None:
    lead = upsert(stub, contact_phone="0812-3456-7890", lead_score=12)
    assert (lead.contact_phone, lead.business_scoped_user_id, lead.username) == (PHONE, "", "")
    assert lead.parent_business_scoped_user_id == ""
