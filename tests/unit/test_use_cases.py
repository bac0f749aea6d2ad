"""The use cases (core/service.py, core/importing.py, core/housekeeping.py) over the
in-memory store, with a clock the test sets: who a lead is, idempotency, merges, erasure
and purge, in milliseconds and without a socket. tests/contract holds the memory store to
the database's behaviour; tests/service keeps what needs SQL, concurrency or gRPC."""

import pytest

from server.core.changes import DELETED, UPSERTED
from server.core.domain import IdentityChange, Lead, LeadFilter, LeadKey, Patch
from server.core.errors import EtagMismatch, InvalidArgument, NotFound
from server.core.housekeeping import Housekeeping, Swept
from server.core.importing import Imported, import_conversations
from server.core.service import REQUEST_ID_TTL_US, SarahService
from tests.support.helpers import DAY_US, Clock
from tests.support.memory_store import MemoryStore

PHONE = "+6281234567890"
OTHER_PHONE = "+6281298765432"
BSUID = "ID.1648738043044942"
OTHER_BSUID = "ID.2000000000000001"
_SECOND = 1_000_000


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def service(store: MemoryStore, clock: Clock) -> SarahService:
    return SarahService(store, clock=clock, purge_inactive_days=30)


def _up(service: SarahService, phone: str = "", bsuid: str = "", **fields: object) -> Lead:
    return service.upsert_state(Patch(contact_phone=phone, business_scoped_user_id=bsuid,
                                      **fields))


def _get(service: SarahService, phone: str = "", bsuid: str = "", workspace: str = "") -> Lead:
    return service.get_state(phone, workspace, business_scoped_user_id=bsuid)


def _change(service: SarahService, phone: str = "", bsuid: str = "", new_phone: str = "",
            new_bsuid: str = "", request_id: str = "") -> Lead:
    return service.change_identity(IdentityChange(
        LeadKey("", phone, bsuid), new_contact_phone=new_phone,
        new_business_scoped_user_id=new_bsuid, request_id=request_id))


def _total(service: SarahService) -> int:
    return service.get_stats(LeadFilter()).total


def _kinds(service: SarahService, phone: str = "", bsuid: str = "") -> list[str]:
    events, _ = service.list_events(phone, "", business_scoped_user_id=bsuid)
    return [event.kind for event in events]


def _activity(service: SarahService) -> tuple[int, ...]:
    days, _ = service.get_activity(None, days=2)
    return tuple(sum(getattr(day, name) for day in days) for name in (
        "new_leads", "messages", "reached_handoff", "reached_completed", "became_hot"))


# Who a lead is

def test_an_unknown_key_reads_as_the_default_and_nothing_is_stored(
        service: SarahService) -> None:
    lead = _get(service, bsuid=BSUID)
    assert (lead.business_scoped_user_id, lead.contact_phone, lead.etag) == (BSUID, "", "")
    assert _total(service) == 0


def test_a_lead_with_both_keys_is_found_by_either_and_any_spelling(
        service: SarahService) -> None:
    _up(service, PHONE, BSUID, lead_score=44)
    assert _get(service, phone=PHONE).lead_score == 44
    assert _get(service, bsuid=BSUID).lead_score == 44
    assert _get(service, phone="0812-3456-7890", bsuid=BSUID).business_scoped_user_id == BSUID


def test_the_bsuid_finds_the_lead_before_the_phone(service: SarahService) -> None:
    _up(service, bsuid=BSUID, lead_score=10)
    _up(service, OTHER_PHONE, OTHER_BSUID, lead_score=90)
    assert _get(service, phone=OTHER_PHONE, bsuid=BSUID).lead_score == 10


def test_a_read_by_phone_of_a_lead_with_another_bsuid_is_the_default(
        service: SarahService) -> None:
    _up(service, PHONE, OTHER_BSUID, lead_score=90)
    lead = _get(service, phone=PHONE, bsuid=BSUID)
    assert (lead.etag, lead.lead_score) == ("", 0)


def test_a_phone_lead_gets_the_bsuid_of_a_write(service: SarahService) -> None:
    first = _up(service, PHONE, lead_score=30, add_messages=2)
    second = _up(service, PHONE, BSUID, add_messages=1)
    assert second.business_scoped_user_id == BSUID and second.created_at == first.created_at
    assert _get(service, bsuid=BSUID).message_count == 3 and _total(service) == 1


def test_two_halves_of_one_person_merge_into_one_lead(
        service: SarahService, clock: Clock) -> None:
    _up(service, PHONE, lead_score=70, state="scoring", add_messages=4,
        business_type="warung", pain_points=("ongkir",))
    phone_half = _get(service, phone=PHONE)
    clock.now += _SECOND
    _up(service, bsuid=BSUID, lead_score=30, add_messages=3, username="budi", name="Budi")
    bsuid_half = _get(service, bsuid=BSUID)
    assert _total(service) == 2
    clock.now += _SECOND
    merged = _up(service, PHONE, BSUID)
    assert (merged.contact_phone, merged.business_scoped_user_id) == (PHONE, BSUID)
    # The BSUID half was written last, so its fields win; slots only one half has are kept.
    assert (merged.lead_score, merged.state) == (30, "greeting")
    assert (merged.name, merged.business_type, merged.pain_points) == (
        "Budi", "warung", ("ongkir",))
    assert (merged.username, merged.message_count) == ("budi", 7)
    assert merged.created_at == phone_half.created_at
    assert merged.last_message_at == bsuid_half.last_message_at
    stats = service.get_stats(LeadFilter())
    assert (stats.total, stats.by_temperature["cold"], stats.by_state["greeting"],
            stats.avg_score) == (1, 1, 1, 30)
    # One history, found by either key: the phone half's, its deleted event, the merge.
    assert _kinds(service, phone=PHONE) == _kinds(service, bsuid=BSUID) == [
        UPSERTED, DELETED, UPSERTED, UPSERTED]


def test_a_merge_adds_no_lead_and_no_messages_to_the_activity(service: SarahService) -> None:
    _up(service, PHONE, message_count=2)
    _up(service, bsuid=BSUID, message_count=3)
    before = _activity(service)
    assert _up(service, PHONE, BSUID).message_count == 5
    assert _activity(service) == before == (2, 5, 0, 0, 0)


def test_a_phone_held_by_another_bsuid_moves_to_the_writer(service: SarahService) -> None:
    _up(service, PHONE, OTHER_BSUID, lead_score=80, lead_temperature="hot")
    _up(service, bsuid=BSUID, lead_score=20)
    moved = _up(service, PHONE, BSUID)
    assert (moved.contact_phone, moved.lead_score) == (PHONE, 20)
    other = _get(service, bsuid=OTHER_BSUID)
    assert (other.contact_phone, other.lead_score, other.lead_temperature) == ("", 80, "hot")
    assert _get(service, phone=PHONE).business_scoped_user_id == BSUID
    stats = service.get_stats(LeadFilter())
    assert (stats.total, stats.by_temperature["hot"], stats.by_temperature["cold"]) == (2, 1, 1)


def test_a_recycled_number_for_a_new_bsuid_starts_a_new_lead(service: SarahService) -> None:
    _up(service, PHONE, OTHER_BSUID, lead_score=80)
    fresh = _up(service, PHONE, BSUID)
    assert (fresh.lead_score, fresh.contact_phone) == (0, PHONE)
    assert _get(service, bsuid=OTHER_BSUID).contact_phone == "" and _total(service) == 2


def test_workspaces_hold_separate_leads(service: SarahService) -> None:
    service.upsert_state(Patch(contact_phone=PHONE, workspace_id="toko", lead_score=5))
    _up(service, PHONE, lead_score=9)
    assert (_get(service, PHONE, workspace="toko").lead_score, _get(service, PHONE).lead_score
            ) == (5, 9)


# ChangeIdentity

def test_a_number_change_moves_the_lead_and_its_history(service: SarahService) -> None:
    _up(service, PHONE, lead_score=55)
    changed = _change(service, phone=PHONE, new_phone="0812-9876-5432")
    assert (changed.contact_phone, changed.lead_score) == (OTHER_PHONE, 55)
    assert _get(service, phone=PHONE).etag == "" and _total(service) == 1
    assert _kinds(service, phone=OTHER_PHONE) == [UPSERTED, UPSERTED]
    assert _kinds(service, phone=PHONE) == [UPSERTED]  # the events that carried it


def test_a_user_id_change_moves_the_lead_to_the_new_bsuid(service: SarahService) -> None:
    _up(service, PHONE, BSUID, lead_score=55)
    changed = _change(service, bsuid=BSUID, new_bsuid=OTHER_BSUID)
    assert (changed.business_scoped_user_id, changed.contact_phone) == (OTHER_BSUID, PHONE)
    assert _get(service, bsuid=BSUID).etag == ""
    assert _get(service, bsuid=OTHER_BSUID).lead_score == 55


def test_a_number_change_onto_a_phone_only_lead_merges_them(service: SarahService) -> None:
    _up(service, OTHER_PHONE, add_messages=2, lead_score=10)
    _up(service, PHONE, BSUID, add_messages=3, lead_score=40)
    merged = _change(service, bsuid=BSUID, new_phone=OTHER_PHONE)
    assert (merged.contact_phone, merged.business_scoped_user_id) == (OTHER_PHONE, BSUID)
    assert (merged.message_count, merged.lead_score) == (5, 40)
    assert _get(service, phone=PHONE).etag == "" and _total(service) == 1


def test_a_number_change_onto_another_bsuid_moves_the_number(service: SarahService) -> None:
    _up(service, OTHER_PHONE, OTHER_BSUID, lead_score=80)
    _up(service, PHONE, BSUID, lead_score=40)
    moved = _change(service, bsuid=BSUID, new_phone=OTHER_PHONE)
    assert (moved.contact_phone, moved.lead_score) == (OTHER_PHONE, 40)
    assert _get(service, bsuid=OTHER_BSUID).contact_phone == "" and _total(service) == 2


def test_a_change_that_already_happened_returns_the_lead_and_writes_nothing(
        service: SarahService, store: MemoryStore) -> None:
    _up(service, OTHER_PHONE, lead_score=55)
    head = store.log_head()
    assert _change(service, phone=PHONE, new_phone=OTHER_PHONE) == _get(service, OTHER_PHONE)
    assert store.log_head() == head


def test_a_change_of_an_unknown_lead_is_not_found_and_writes_nothing(
        service: SarahService, store: MemoryStore) -> None:
    with pytest.raises(NotFound):
        _change(service, phone=PHONE, new_bsuid=BSUID)
    assert _total(service) == 0 and store.log_head() == (0, 0)


def test_a_change_retried_with_its_request_id_returns_the_first_result(
        service: SarahService, clock: Clock) -> None:
    _up(service, PHONE, BSUID)
    first = _change(service, bsuid=BSUID, new_phone=OTHER_PHONE, request_id="chg-1")
    clock.now += _SECOND
    assert _change(service, bsuid=BSUID, new_phone=OTHER_PHONE, request_id="chg-1") == first


@pytest.mark.parametrize(("change", "named"), [
    (IdentityChange(LeadKey("", PHONE), new_contact_phone="0812-3456-7890"),
     {"new_contact_phone"}),
    (IdentityChange(LeadKey("", PHONE)), {"new_contact_phone", "new_business_scoped_user_id"}),
    (IdentityChange(LeadKey(""), new_contact_phone=PHONE),
     {"contact_phone", "business_scoped_user_id"}),
    (IdentityChange(LeadKey("", PHONE), new_business_scoped_user_id="id.bad"),
     {"new_business_scoped_user_id"}),
])
def test_a_bad_change_names_the_field_and_writes_nothing(
        service: SarahService, change: IdentityChange, named: set[str]) -> None:
    _up(service, PHONE, lead_score=33)
    with pytest.raises(InvalidArgument) as caught:
        service.change_identity(change)
    assert {field for field, _ in caught.value.violations} == named
    assert _get(service, phone=PHONE).lead_score == 33


# Idempotency and the etag

def test_a_retried_request_id_is_counted_once(service: SarahService, clock: Clock) -> None:
    first = _up(service, PHONE, add_messages=1, request_id="wamid.1")
    before = (_kinds(service, PHONE), _activity(service))
    clock.now += _SECOND
    assert _up(service, PHONE, add_messages=1, request_id="wamid.1") == first
    assert _get(service, PHONE).message_count == 1 and _total(service) == 1
    assert (_kinds(service, PHONE), _activity(service)) == before


def test_a_request_id_of_a_bsuid_lead_is_answered_once(service: SarahService) -> None:
    first = _up(service, bsuid=BSUID, add_messages=1, request_id="wamid.1")
    assert _up(service, bsuid=BSUID, add_messages=1, request_id="wamid.1") == first
    assert _get(service, bsuid=BSUID).message_count == 1


def test_a_request_id_is_found_after_the_lead_gains_a_key(service: SarahService) -> None:
    first = _up(service, PHONE, add_messages=1, request_id="wamid.1")
    _up(service, PHONE, BSUID)
    assert _up(service, PHONE, BSUID, add_messages=1, request_id="wamid.1") == first


def test_a_request_id_is_remembered_for_24_hours_then_applies_again(
        service: SarahService, clock: Clock) -> None:
    assert _up(service, PHONE, add_messages=1, request_id="r1").message_count == 1
    clock.now += REQUEST_ID_TTL_US - 1
    assert _up(service, PHONE, add_messages=1, request_id="r1").message_count == 1
    clock.now += 2
    assert _up(service, PHONE, add_messages=1, request_id="r1").message_count == 2


def test_without_a_request_id_every_call_applies(service: SarahService) -> None:
    assert [_up(service, PHONE, add_messages=1).message_count for _ in range(3)] == [1, 2, 3]


def test_a_stale_etag_is_refused_and_writes_nothing(service: SarahService) -> None:
    lead = _up(service, PHONE, lead_score=1)
    with pytest.raises(EtagMismatch):
        _up(service, PHONE, lead_score=2, etag="stale")
    assert _up(service, PHONE, lead_score=3, etag=lead.etag).lead_score == 3
    assert _kinds(service, PHONE) == [UPSERTED, UPSERTED]


# Erasure and purge

def test_erasing_by_either_key_erases_the_whole_lead_and_its_request_ids(
        service: SarahService) -> None:
    _up(service, PHONE, add_messages=1, request_id="wamid.phone")
    _up(service, PHONE, BSUID, add_messages=1, request_id="wamid.both")
    assert service.delete_state("", "", business_scoped_user_id=BSUID) is True
    assert _get(service, phone=PHONE).etag == "" and _total(service) == 0
    again = _up(service, PHONE, add_messages=1, request_id="wamid.phone")
    assert again.message_count == 1 and again.business_scoped_user_id == ""
    assert _up(service, PHONE, BSUID, add_messages=1,
               request_id="wamid.both").message_count == 2


def test_erasure_leaves_only_the_deleted_event_and_keeps_the_activity(
        service: SarahService) -> None:
    _up(service, PHONE, name="Budi", message_count=2)
    _change(service, phone=PHONE, new_phone=OTHER_PHONE)
    activity = _activity(service)
    assert service.delete_state(OTHER_PHONE, "") is True
    [deleted], _ = service.list_events(OTHER_PHONE, "")
    assert (deleted.kind, deleted.lead) == (DELETED, Lead("", OTHER_PHONE))
    assert _kinds(service, PHONE) == []  # its events under the old number went too
    assert _activity(service) == activity


def test_deleting_an_unknown_lead_is_false_and_forgets_its_orphan_request_ids(
        service: SarahService, store: MemoryStore) -> None:
    assert service.delete_state(PHONE, "") is False
    _up(service, PHONE, BSUID, add_messages=1, request_id="r1")
    # Another person holds the BSUID: its records stay.
    assert service.delete_state(OTHER_PHONE, "", business_scoped_user_id=BSUID) is True
    assert store.log_head()[0] == 2


def test_the_purge_erases_only_leads_silent_that_long(
        service: SarahService, clock: Clock) -> None:
    _up(service, PHONE, add_messages=1)
    clock.now += 20 * DAY_US
    _up(service, OTHER_PHONE, add_messages=1)
    _up(service, bsuid=BSUID, lead_score=5)  # no message: counts from its creation
    clock.now += 11 * DAY_US
    assert service.inactive_leads(10) == [LeadKey("", PHONE)]
    assert service.purge(LeadKey("", PHONE)) is True
    assert _kinds(service, PHONE) == [DELETED] and _total(service) == 2


def test_a_lead_that_spoke_since_it_was_listed_is_not_purged(
        service: SarahService, clock: Clock) -> None:
    _up(service, PHONE, add_messages=1)
    clock.now += 31 * DAY_US
    [key] = service.inactive_leads(10)
    _up(service, PHONE, add_messages=1)
    assert service.purge(key) is False and _total(service) == 1


def test_without_the_purge_setting_no_lead_is_erased(store: MemoryStore, clock: Clock) -> None:
    service = SarahService(store, clock=clock)
    _up(service, PHONE, add_messages=1)
    clock.now += 365 * DAY_US
    assert service.inactive_leads(10) == [] and service.purge(LeadKey("", PHONE)) is False
    assert _total(service) == 1


def test_a_sweep_purges_prunes_and_forgets_a_batch_at_a_time(
        store: MemoryStore, clock: Clock) -> None:
    service = SarahService(store, clock=clock, history_days=10, purge_inactive_days=30)
    for i, phone in enumerate((PHONE, OTHER_PHONE, "+6281200000000")):
        _up(service, phone, add_messages=1, request_id=f"r{i}")
    clock.now += 11 * DAY_US
    keeper = _up(service, PHONE, add_messages=1, request_id="r-again")
    clock.now += 20 * DAY_US
    # Two leads silent 31 days are erased (their events and request ids with them); the
    # keeper's two events are past the 10 days of history, its two request ids past 24 h.
    assert Housekeeping(service, batch=2).sweep() == Swept(leads=2, events=2, requests=2)
    assert store.log_head() == (6, 4) and _get(service, PHONE) == keeper
    assert _kinds(service, OTHER_PHONE) == [DELETED] and _kinds(service, PHONE) == []
    assert Housekeeping(service, batch=2).sweep() == Swept()


# The import

def _imported(phone: str = "", bsuid: str = "", at: int = 1_700_000_000_000_000,
              **fields: object) -> Imported:
    patch = Patch(contact_phone=phone, business_scoped_user_id=bsuid,
                  **fields)
    return Imported(patch, created_at=at, updated_at=at, last_message_at=at)


def test_an_import_merges_by_the_identity_rules_and_says_what_became_of_each(
        store: MemoryStore, service: SarahService) -> None:
    outcomes = import_conversations(store, "ID", [
        _imported(PHONE, lead_score=10), _imported(bsuid=BSUID, lead_score=20),
        _imported("08123"), _imported(PHONE, BSUID)])
    assert [o.outcome for o in outcomes] == ["imported", "imported", "rejected", "merged"]
    assert "contact_phone" in outcomes[2].reason
    assert _total(service) == 1 and _get(service, bsuid=BSUID).contact_phone == PHONE
    again = import_conversations(store, "ID", [_imported(PHONE, BSUID)])
    assert [o.outcome for o in again] == ["unchanged"]


def test_an_import_over_the_batch_limit_is_refused_whole(store: MemoryStore) -> None:
    with pytest.raises(InvalidArgument):
        import_conversations(store, "ID", [_imported(PHONE)] * 501)
    assert store.log_head() == (0, 0)
