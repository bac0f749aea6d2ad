"""ListLeads (filters, orders, keyset pages) and GetStats over real gRPC."""

import pytest

from sarah.v1 import sarah_pb2 as pb
from tests.support.helpers import get, upsert


def _phone(i: int) -> str:
    return f"+62812345{i:05d}"


def _all_pages(stub, **fields) -> list[list[pb.Conversation]]:
    pages, token = [], ""
    while True:
        page = stub.ListLeads(pb.ListLeadsRequest(page_token=token, **fields), timeout=10)
        pages.append(list(page.leads))
        token = page.next_page_token
        if not token:
            return pages


@pytest.fixture
def leads(stub) -> list[pb.Conversation]:
    temps = [pb.cold, pb.warm, pb.hot]
    states = [pb.greeting, pb.qualifying, pb.scoring, pb.handoff, pb.completed]
    return [
        upsert(stub, contact_phone=_phone(i), workspace_id="toko" if i % 2 else "",
               lead_score=(i * 7) % 101, lead_temperature=temps[i % 3], state=states[i % 5],
               message_count=i)
        for i in range(30)
    ]


def test_default_order_is_hottest_first_with_ties_broken_by_phone(stub) -> None:
    for i, score in enumerate([50, 90, 50, 10]):
        upsert(stub, contact_phone=_phone(i), lead_score=score)
    listed = stub.ListLeads(pb.ListLeadsRequest(), timeout=10).leads
    assert [(c.lead_score, c.contact_phone) for c in listed] == [
        (90, _phone(1)), (50, _phone(2)), (50, _phone(0)), (10, _phone(3))]


@pytest.mark.parametrize("order", ["last_message_at desc", "created_at desc", "updated_at desc"])
def test_time_orders_are_newest_first(stub, leads, order) -> None:
    key = order.split()[0]
    listed = stub.ListLeads(pb.ListLeadsRequest(order_by=order, page_size=500), timeout=10).leads
    stamps = [getattr(c, key).ToMicroseconds() for c in listed]
    assert len(listed) == 30 and stamps == sorted(stamps, reverse=True)


def test_filters_combine(stub, leads) -> None:
    request = pb.ListLeadsRequest(workspace_id="toko", temperature=pb.hot, min_score=20,
                                  page_size=500)
    listed = stub.ListLeads(request, timeout=10).leads
    expected = {c.contact_phone for c in leads
                if c.workspace_id == "toko" and c.lead_temperature == pb.hot
                and c.lead_score >= 20}
    assert expected and {c.contact_phone for c in listed} == expected
    by_state = stub.ListLeads(pb.ListLeadsRequest(state=pb.handoff, page_size=500), timeout=10)
    assert {c.contact_phone for c in by_state.leads} == {
        c.contact_phone for c in leads if c.state == pb.handoff}


def test_empty_workspace_id_is_the_default_workspace_not_all(stub, leads) -> None:
    listed = stub.ListLeads(pb.ListLeadsRequest(workspace_id="", page_size=500), timeout=10)
    assert len(listed.leads) == 15 and {c.workspace_id for c in listed.leads} == {""}
    everything = stub.ListLeads(pb.ListLeadsRequest(page_size=500), timeout=10)
    assert len(everything.leads) == 30


def test_pages_cover_every_lead_once(stub, leads) -> None:
    pages = _all_pages(stub, page_size=7)
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    phones = [c.contact_phone for page in pages for c in page]
    assert sorted(phones) == sorted(c.contact_phone for c in leads)


def test_page_size_defaults_to_50_and_is_capped_at_500(stub) -> None:
    for i in range(60):
        upsert(stub, contact_phone=_phone(i))
    assert len(stub.ListLeads(pb.ListLeadsRequest(), timeout=10).leads) == 50
    capped = stub.ListLeads(pb.ListLeadsRequest(page_size=10_000), timeout=10)
    assert len(capped.leads) == 60 and capped.next_page_token == ""


def test_pages_are_stable_while_leads_are_inserted(stub, leads) -> None:
    seen, token, inserted = [], "", 0
    while True:
        page = stub.ListLeads(pb.ListLeadsRequest(page_size=4, page_token=token), timeout=10)
        seen += [c.contact_phone for c in page.leads]
        # New leads land before, inside and after the walk's position.
        for score in (100, 50, 0):
            upsert(stub, contact_phone=_phone(1000 + inserted), lead_score=score)
            inserted += 1
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert {c.contact_phone for c in leads} <= set(seen)


def test_a_page_shows_each_lead_as_get_state_does_after_every_write(stub, leads) -> None:
    # A dashboard lists the same page again and again: a lead written between two lists
    # shows as written, every field and timestamp as GetState has them.
    def listed() -> list[pb.Conversation]:
        return list(stub.ListLeads(pb.ListLeadsRequest(page_size=500), timeout=10).leads)

    first = listed()
    changed = upsert(stub, contact_phone=_phone(3), workspace_id="toko",
                     extracted_data=pb.ExtractedData(name="Budi", pain_points=["lambat"]),
                     username="budi", add_messages=2)
    again = listed()
    assert len(again) == len(first) == 30
    assert [c for c in again if c.contact_phone == _phone(3)] == [changed]
    assert [c for c in again if c.contact_phone != _phone(3)] == [
        c for c in first if c.contact_phone != _phone(3)]
    for conversation in again[:5]:
        assert conversation == get(stub, conversation.contact_phone, conversation.workspace_id)


def test_stats_count_by_temperature_and_state(stub, leads) -> None:
    stats = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert stats.total == 30
    assert (stats.cold, stats.warm, stats.hot) == (10, 10, 10)
    assert (stats.by_state.greeting, stats.by_state.completed) == (6, 6)
    assert stats.avg_score == pytest.approx(sum(c.lead_score for c in leads) / 30)
    toko = stub.GetStats(pb.GetStatsRequest(workspace_id="toko"), timeout=10)
    assert toko.total == 15
    assert toko.avg_score == pytest.approx(
        sum(c.lead_score for c in leads if c.workspace_id == "toko") / 15)


def test_stats_of_nothing_are_zero(stub) -> None:
    stats = stub.GetStats(pb.GetStatsRequest(workspace_id="empty"), timeout=10)
    assert (stats.total, stats.hot, stats.avg_score, stats.by_state.greeting) == (0, 0, 0.0, 0)


def test_stats_of_a_workspace_without_leads_are_as_of_the_latest_write(stub) -> None:
    # Watching from its revision misses nothing: it is the latest one, not 0.
    written = [upsert(stub, contact_phone=_phone(i), lead_score=10 * i) for i in range(3)]
    revision = stub.ListLeads(pb.ListLeadsRequest(), timeout=10).revision
    empty = stub.GetStats(pb.GetStatsRequest(workspace_id="empty"), timeout=10)
    assert (empty.total, empty.avg_score, empty.revision) == (0, 0.0, revision)
    everything = stub.GetStats(pb.GetStatsRequest(), timeout=10)
    assert (everything.total, everything.avg_score, everything.revision) == (
        3, pytest.approx(sum(c.lead_score for c in written) / 3), revision)
    assert revision > 0


def test_page_of_big_leads_stops_under_the_grpc_message_limit(stub) -> None:
    big = pb.ExtractedData(name="n" * 4096, business_type="b" * 4096, goals="g" * 4096,
                           pain_points=["p" * 4096] * 20)
    for i in range(50):
        upsert(stub, contact_phone=_phone(i), extracted_data=big)
    # The default client refuses messages over 4 MiB; 50 such leads would be ~4.7 MB.
    first = stub.ListLeads(pb.ListLeadsRequest(page_size=500), timeout=30)
    assert 0 < len(first.leads) < 50 and first.next_page_token
    assert first.ByteSize() < 4 * 1024 * 1024
    rest = _all_pages(stub, page_size=500)
    assert sum(len(p) for p in rest) == 50


def test_stats_counts_follow_every_kind_of_write(stub, database_url) -> None:
    from tests.support.databases import query

    temps, states = [pb.cold, pb.warm, pb.hot], [pb.greeting, pb.qualifying, pb.handoff]
    for i in range(12):
        upsert(stub, contact_phone=_phone(i), workspace_id=f"w{i % 3}", lead_score=i * 5,
               lead_temperature=temps[i % 3], state=states[i % 3])
    for i in range(0, 12, 2):  # move leads between buckets and change scores
        upsert(stub, contact_phone=_phone(i), workspace_id=f"w{i % 3}", lead_score=99,
               lead_temperature=pb.hot, state=pb.completed)
    for i in range(0, 12, 3):
        stub.DeleteState(pb.DeleteStateRequest(contact_phone=_phone(i), workspace_id=f"w{i % 3}"),
                         timeout=10)
    for workspace in (None, "w0", "w1", "w2"):
        where = f"WHERE workspace_id = '{workspace}'" if workspace else ""
        [(total, avg)] = query(database_url, "SELECT COUNT(*), COALESCE(AVG(lead_score), 0) "
                                             f"FROM conversation {where}")
        hot = query(database_url, "SELECT COUNT(*) FROM conversation "
                                  f"{where or 'WHERE 1 = 1'} AND lead_temperature = 'hot'")
        stats = stub.GetStats(pb.GetStatsRequest(workspace_id=workspace), timeout=10)
        assert (stats.total, stats.hot) == (total, hot[0][0])
        assert stats.avg_score == pytest.approx(float(avg))
