"""GetActivity's local days on both databases, with the service's clock injected: writes
land on the day of their zone, across midnight, in every zone the contract names and
across New York's DST switches."""

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from server.core.domain import Patch
from server.core.service import SarahService
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository


class _Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def at(self, local: str, zone: str) -> None:
        """Set the clock to a local wall-clock time in `zone`."""
        moment = dt.datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(zone))
        self.now = int(moment.timestamp()) * 1_000_000


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def service(database_url: str, clock: _Clock) -> Iterator[SarahService]:
    db = open_database(database_url)
    migrate(db)
    store = Repository(db)
    yield SarahService(store, clock=clock)
    store.close()


def _new_lead(service: SarahService, n: int, messages: int = 1) -> None:
    service.upsert_state(Patch(contact_phone=f"+62812000{n:05d}", message_count=messages))


def _days(service: SarahService, zone: str, days: int) -> list[tuple[str, int, int]]:
    found, name = service.get_activity(None, zone, days)
    assert name == zone
    return [(d.date.isoformat(), d.new_leads, d.messages) for d in found]


@pytest.mark.parametrize("zone", ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura",
                                  "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"])
def test_writes_either_side_of_local_midnight_fall_on_their_own_days(
        service: SarahService, clock: _Clock, zone: str) -> None:
    clock.at("2026-05-01T23:59:00", zone)
    _new_lead(service, 1, messages=2)
    clock.at("2026-05-02T00:00:00", zone)
    _new_lead(service, 2, messages=5)
    assert _days(service, zone, 2) == [("2026-05-01", 1, 2), ("2026-05-02", 1, 5)]
    # Seen from UTC, the same two writes: counted once each, whatever the zone.
    assert sum(d.new_leads for d in service.get_activity(None, "UTC", 3)[0]) == 2


def test_a_day_boundary_crossed_by_the_clock_moves_today(
        service: SarahService, clock: _Clock) -> None:
    clock.at("2026-05-01T23:50:00", "Asia/Jakarta")
    _new_lead(service, 1)
    assert _days(service, "Asia/Jakarta", 1) == [("2026-05-01", 1, 1)]
    clock.now += 20 * 60 * 1_000_000  # past midnight in Jakarta: a new day, empty so far
    assert _days(service, "Asia/Jakarta", 1) == [("2026-05-02", 0, 0)]
    _new_lead(service, 2, messages=4)
    assert _days(service, "Asia/Jakarta", 2) == [("2026-05-01", 1, 1), ("2026-05-02", 1, 4)]
    # 23:50 in Jakarta is 22:20 in Kolkata: both writes were on May 1st there.
    assert _days(service, "Asia/Kolkata", 1) == [("2026-05-01", 2, 5)]


@pytest.mark.parametrize(("day", "before", "after"), [
    ("2026-03-08", "2026-03-07", "2026-03-09"),  # a 23-hour day: clocks go forward at 2:00
    ("2026-11-01", "2026-10-31", "2026-11-02"),  # a 25-hour day: 1:00 to 2:00 comes twice
])
def test_a_new_york_day_across_a_dst_switch_holds_exactly_its_own_writes(
        service: SarahService, clock: _Clock, day: str, before: str, after: str) -> None:
    zone = "America/New_York"
    for n, local in enumerate([f"{before}T23:59:00", f"{day}T00:00:00", f"{day}T03:30:00",
                               f"{day}T23:59:00", f"{after}T00:00:00"]):
        clock.at(local, zone)
        _new_lead(service, n)
    if day == "2026-11-01":  # the hour that comes twice: its second 1:30, in EST
        clock.at(f"{day}T01:30:00", zone)
        clock.now += 3600 * 1_000_000
        _new_lead(service, 9)
    clock.at(f"{after}T12:00:00", zone)
    counts = [n for _, n, _ in _days(service, zone, 3)]
    assert counts == [1, 4 if day == "2026-11-01" else 3, 1]
