"""The history table, the activity chart and the requests behind them, drawn by rich into a
recording console: no server, no terminal."""

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from client import render
from client.formats import to_json
from client.requests import activity_request, next_page
from sarah.v1 import sarah_pb2 as pb

PHONE = "+6281234567890"
BSUID = "ID.1648738043044942"
# 2025-12-01 13:40:00 UTC: 20:40 in Jakarta (+07), 21:40 in Makassar (+08).
AT = 1_764_596_400


def _recorded(draw: Callable[..., None], *args: object) -> list[str]:
    console = Console(record=True, width=160)
    draw(console, *args)
    return console.export_text().splitlines()


def _cells(lines: list[str]) -> list[list[str]]:
    """The cells of each body row of a rich table: the lines between its vertical bars."""
    return [[cell.strip() for cell in line.split("│")[1:-1]]
            for line in lines if line.startswith("│")]


def _event(revision: int, kind: "pb.EventKind.ValueType", seconds: int,
           changed: tuple[str, ...] = (), **lead: Any) -> pb.LeadEvent:
    event = pb.LeadEvent(revision=revision, kind=kind, changed=changed,
                         conversation=pb.Conversation(**lead))
    event.at.FromSeconds(seconds)
    return event


def _page(token: str = "") -> pb.ListEventsResponse:
    return pb.ListEventsResponse(next_page_token=token, events=[
        _event(12, pb.deleted, AT + 3600, business_scoped_user_id=BSUID),
        _event(9, pb.upserted, AT, ("state", "lead_temperature", "lead_score"),
               contact_phone=PHONE, business_scoped_user_id=BSUID, state=pb.handoff,
               lead_temperature=pb.hot, lead_score=85),
        _event(4, pb.upserted, AT - 86_400, ("contact_phone", "state"),
               business_scoped_user_id=BSUID, state=pb.qualifying),
    ])


def test_history_rows_newest_first_in_the_zone_given() -> None:
    lines = _recorded(render.history, _page(), ZoneInfo("Asia/Makassar"))
    assert lines[1].split() == ["┃", "revision", "┃", "at", "┃", "kind", "┃", "lead", "┃",
                                "state", "┃", "temperature", "┃", "score", "┃", "changed", "┃"]
    assert _cells(lines) == [
        ["12", "2025-12-01 22:40:00 +0800", "deleted", BSUID, "", "", "", ""],
        ["9", "2025-12-01 21:40:00 +0800", "upserted", PHONE, "handoff", "hot", "85",
         "state, lead_temperature, lead_score"],
        ["4", "2025-11-30 21:40:00 +0800", "upserted", BSUID, "qualifying", "cold", "0",
         "contact_phone, state"],
    ]
    assert lines[-1] == "3 events"


def test_history_times_follow_the_zone_and_the_next_page_is_named() -> None:
    lines = _recorded(render.history, _page("tok.2"), ZoneInfo("Asia/Kathmandu"))
    assert [row[1] for row in _cells(lines)] == [
        "2025-12-01 20:25:00 +0545", "2025-12-01 19:25:00 +0545", "2025-11-30 19:25:00 +0545"]
    assert lines[-1] == "3 events; more with --page-token tok.2"


def test_history_of_an_unknown_lead_is_an_empty_table() -> None:
    lines = _recorded(render.history, pb.ListEventsResponse(), ZoneInfo("Asia/Jakarta"))
    assert _cells(lines) == [] and lines[-1] == "0 events"


def test_history_json_is_the_contracts_words() -> None:
    event = to_json(_page())["events"][1]
    assert list(event) == ["revision", "kind", "conversation", "changed", "at"]
    assert (event["revision"], event["kind"], event["at"]) == ("9", "upserted",
                                                              "2025-12-01T13:40:00Z")
    assert event["conversation"]["state"] == "handoff"
    assert event["changed"] == ["state", "lead_temperature", "lead_score"]


def _activity() -> pb.GetActivityResponse:
    return pb.GetActivityResponse(time_zone="Asia/Makassar", days=[
        pb.ActivityDay(date="2025-11-29", new_leads=1, messages=5),
        pb.ActivityDay(date="2025-11-30"),
        pb.ActivityDay(date="2025-12-01", new_leads=3, messages=20, reached_handoff=2,
                       reached_completed=1, became_hot=4),
    ])


def test_activity_draws_a_bar_per_day_scaled_to_the_busiest() -> None:
    lines = _recorded(render.activity, _activity())
    assert lines[0].strip() == "activity per day in Asia/Makassar"
    rows = _cells(lines)
    assert [row[:3] for row in rows] == [["2025-11-29", "Sat", "5"], ["2025-11-30", "Sun", "0"],
                                         ["2025-12-01", "Mon", "20"], ["total", "", "25"]]
    # The busiest day fills the bar's 30 characters; 5 of 20 messages is a quarter of it.
    assert [row[3] for row in rows] == ["███████▌", "", "█" * 30, ""]
    assert [row[4:] for row in rows] == [["1", "0", "0", "0"], ["0", "0", "0", "0"],
                                         ["3", "2", "1", "4"], ["4", "2", "1", "4"]]


def test_activity_of_quiet_days_draws_no_bars() -> None:
    quiet = pb.GetActivityResponse(time_zone="Asia/Jakarta",
                                   days=[pb.ActivityDay(date="2025-12-01")])
    assert _cells(_recorded(render.activity, quiet)) == [
        ["2025-12-01", "Mon", "0", "", "0", "0", "0", "0"],
        ["total", "", "0", "", "0", "0", "0", "0"]]


def test_activity_request_sends_the_contracts_defaults() -> None:
    assert activity_request(None, None, None, None) == pb.GetActivityRequest(
        time_zone="Asia/Jakarta", days=30)
    assert not activity_request(None, None, None, None).HasField("workspace_id")
    chosen = activity_request(None, "", "Asia/Jayapura", 7)
    assert chosen.HasField("workspace_id") and (chosen.time_zone, chosen.days) == (
        "Asia/Jayapura", 7)
    given = pb.GetActivityRequest(days=3)
    assert activity_request(given, None, None, None) is given
    with pytest.raises(TypeError, match="not both"):
        activity_request(given, None, None, 5)


def test_next_page_keeps_the_lead_and_stops_on_the_last_page() -> None:
    first = pb.ListEventsRequest(contact_phone=PHONE, workspace_id="w", page_size=2)
    following = next_page(first, pb.ListEventsResponse(next_page_token="t2"))
    assert following == pb.ListEventsRequest(contact_phone=PHONE, workspace_id="w",
                                             page_size=2, page_token="t2")
    assert first.page_token == ""  # the caller's request is left as it was
    assert next_page(following, pb.ListEventsResponse()) is None
