"""Concurrent writers to one lead lose neither each other's fields nor a message count."""

import threading
from concurrent.futures import ThreadPoolExecutor

from sarah.v1 import sarah_pb2 as pb
from tests.support.helpers import PHONE, get, upsert

ROUNDS = 15


def _slot_writer(i: int, round_: int) -> dict:
    """Thread i owns one field (or, past the fields, owns none and only counts)."""
    value = round_ + 1
    owned = [
        {"extracted_data": pb.ExtractedData(name=f"name-{value}")},
        {"extracted_data": pb.ExtractedData(business_type=f"type-{value}")},
        {"extracted_data": pb.ExtractedData(team_size=value)},
        {"extracted_data": pb.ExtractedData(goals=f"goal-{value}")},
        {"extracted_data": pb.ExtractedData(pain_points=[f"pain-{value}"])},
        {"lead_score": value},
        {"state": pb.scoring},
        {"lead_temperature": pb.hot},
        {"language": pb.en},
    ]
    return owned[i] if i < len(owned) else {}


def test_sixteen_threads_racing_on_one_lead_lose_nothing(stub) -> None:
    def writer(i: int) -> None:
        for round_ in range(ROUNDS):
            upsert(stub, contact_phone=PHONE, add_messages=1, **_slot_writer(i, round_))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(writer, range(16)))

    lead = get(stub, PHONE)
    assert lead.message_count == 16 * ROUNDS
    data = lead.extracted_data
    assert (data.name, data.business_type, data.team_size, data.goals, list(data.pain_points)) == (
        f"name-{ROUNDS}", f"type-{ROUNDS}", ROUNDS, f"goal-{ROUNDS}", [f"pain-{ROUNDS}"])
    assert (lead.lead_score, lead.state, lead.lead_temperature, lead.language) == (
        ROUNDS, pb.scoring, pb.hot, pb.en)


def test_racing_retries_of_one_request_id_count_once(stub) -> None:
    def send(_: int) -> pb.Conversation:
        return upsert(stub, contact_phone=PHONE, add_messages=1, request_id="wamid.same")

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(send, range(32)))
    assert get(stub, PHONE).message_count == 1
    assert len({r.etag for r in results}) == 1


BSUID = "ID.1648738043044942"


def _at_once(stub, requests: list[dict]) -> None:
    """Send every request from its own thread, released together."""
    start = threading.Barrier(len(requests))

    def send(fields: dict) -> None:
        start.wait(timeout=10)
        upsert(stub, add_messages=1, **fields)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        list(pool.map(send, requests))


def test_two_halves_of_one_person_arriving_at_once_end_as_one_lead(stub) -> None:
    for round_ in range(ROUNDS):
        phone, bsuid = f"+62812555{round_:05d}", f"ID.{round_}"
        _at_once(stub, [{"contact_phone": phone, "business_scoped_user_id": bsuid},
                        {"contact_phone": phone}, {"business_scoped_user_id": bsuid},
                        {"contact_phone": phone, "business_scoped_user_id": bsuid}])
        lead = stub.GetState(pb.GetStateRequest(business_scoped_user_id=bsuid), timeout=10)
        assert (lead.contact_phone, lead.message_count) == (phone, 4), round_
    leads = stub.ListLeads(pb.ListLeadsRequest(page_size=500), timeout=10).leads
    assert len(leads) == ROUNDS
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == ROUNDS


def test_writers_racing_on_one_new_bsuid_make_one_lead(stub) -> None:
    _at_once(stub, [{"business_scoped_user_id": BSUID}] * 16)
    lead = stub.GetState(pb.GetStateRequest(business_scoped_user_id=BSUID), timeout=10)
    assert lead.message_count == 16
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 1
