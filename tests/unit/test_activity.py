"""Activity counts: what a write adds, and local calendar days in any zone (DST included)."""

import datetime as dt
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from server.core.activity import (
    ActivityChange,
    ActivityDeltas,
    ActivityRow,
    bucket_of,
    counts_of,
    local_days,
    per_day,
)
from server.core.domain import Lead

LEAD = Lead(workspace_id="toko", contact_phone="+6281234567890", message_count=3)


def _us(text: str, zone: str) -> int:
    """Microseconds since the epoch of a local wall-clock time in `zone`."""
    local = dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(local.timestamp()) * 1_000_000


def test_a_create_counts_one_new_lead_and_its_initial_messages() -> None:
    assert counts_of(None, LEAD) == (1, 3, 0, 0, 0)
    assert counts_of(None, replace(LEAD, state="handoff", lead_temperature="hot")) == (
        1, 3, 1, 0, 1)


def test_an_update_counts_growth_and_entering_states_once() -> None:
    grown = replace(LEAD, message_count=5, state="handoff")
    assert counts_of(LEAD, grown) == (0, 2, 1, 0, 0)
    assert counts_of(grown, replace(grown, message_count=6)) == (0, 1, 0, 0, 0)  # still handoff
    done = replace(grown, state="completed", lead_temperature="hot")
    assert counts_of(grown, done) == (0, 0, 0, 1, 1)


def test_a_decrease_of_message_count_counts_zero() -> None:
    assert counts_of(LEAD, replace(LEAD, message_count=0)) == (0, 0, 0, 0, 0)


def test_deltas_add_up_per_workspace_and_quarter_hour_and_drop_zeros() -> None:
    at = _us("2026-05-01T10:00:00", "UTC")
    deltas = ActivityDeltas()
    deltas.change(None, LEAD, at)
    deltas.change(LEAD, replace(LEAD, message_count=4), at + 60_000_000)  # same quarter
    deltas.change(LEAD, LEAD, at + 900_000_000)  # nothing: no row
    deltas.change(None, replace(LEAD, workspace_id="a"), at)
    assert list(deltas.changes()) == [
        ActivityChange("a", bucket_of(at), 1, 3, 0, 0, 0),
        ActivityChange("toko", bucket_of(at), 1, 4, 0, 0, 0),
    ]


def test_an_imported_lead_counts_on_its_own_days() -> None:
    created, updated = _us("2025-01-02T08:00:00", "UTC"), _us("2025-03-04T08:00:00", "UTC")
    deltas = ActivityDeltas()
    deltas.imported(replace(LEAD, state="completed", created_at=created, updated_at=updated),
                    at_us=_us("2026-05-01T00:00:00", "UTC"))
    assert list(deltas.changes()) == [
        ActivityChange("toko", bucket_of(created), 1, 3, 0, 0, 0),
        ActivityChange("toko", bucket_of(updated), 0, 0, 0, 1, 0),
    ]


@pytest.mark.parametrize(("zone", "midnight_utc"), [
    ("Asia/Jakarta", "2026-04-30T17:00:00"),  # WIB +7
    ("Asia/Makassar", "2026-04-30T16:00:00"),  # WITA +8
    ("Asia/Jayapura", "2026-04-30T15:00:00"),  # WIT +9
    ("Asia/Kolkata", "2026-04-30T18:30:00"),  # +5:30
    ("Asia/Kathmandu", "2026-04-30T18:15:00"),  # +5:45
    ("America/New_York", "2026-05-01T04:00:00"),  # EDT -4
])
def test_a_local_day_starts_at_local_midnight_on_a_quarter_hour(
        zone: str, midnight_utc: str) -> None:
    noon = _us("2026-05-01T12:00:00", zone)
    [(date, start), (after, end)] = local_days(ZoneInfo(zone), noon, 1)
    assert (date, after) == (dt.date(2026, 5, 1), dt.date(2026, 5, 2))
    assert start == bucket_of(_us(midnight_utc, "UTC"))
    assert end - start == 96  # 24 hours


@pytest.mark.parametrize(("day", "quarters"), [
    ("2026-03-08", 92),  # clocks forward: a 23-hour day
    ("2026-11-01", 100),  # clocks back: a 25-hour day
    ("2026-07-04", 96),
])
def test_a_new_york_day_is_as_long_as_it_is_across_dst(day: str, quarters: int) -> None:
    [(_, start), (_, end)] = local_days(ZoneInfo("America/New_York"),
                                        _us(f"{day}T12:00:00", "America/New_York"), 1)
    assert end - start == quarters


def test_days_run_oldest_first_and_end_today() -> None:
    bounds = local_days(ZoneInfo("Asia/Jakarta"), _us("2026-03-01T00:10:00", "Asia/Jakarta"), 3)
    assert [d for d, _ in bounds] == [dt.date(2026, 2, 27), dt.date(2026, 2, 28),
                                      dt.date(2026, 3, 1), dt.date(2026, 3, 2)]


def test_rows_fall_on_their_local_day_either_side_of_midnight() -> None:
    zone = "Asia/Kathmandu"
    bounds = local_days(ZoneInfo(zone), _us("2026-05-02T12:00:00", zone), 2)
    late = ActivityRow(bucket_of(_us("2026-05-01T23:45:00", zone)), 1, 2, 0, 0, 0)
    early = ActivityRow(bucket_of(_us("2026-05-02T00:00:00", zone)), 0, 5, 1, 0, 0)
    outside = ActivityRow(bucket_of(_us("2026-05-03T00:00:00", zone)), 9, 9, 9, 9, 9)
    days = per_day(bounds, [late, early, outside])
    assert [(d.date.isoformat(), d.new_leads, d.messages, d.reached_handoff) for d in days] == [
        ("2026-05-01", 1, 2, 0), ("2026-05-02", 0, 5, 1)]
