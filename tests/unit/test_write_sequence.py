"""The upsert's unit of work on a SQLite file, with a fake clock: idempotency, the 24-hour
request_id window, and expired records left to housekeeping (a file, not a socket, so it
stays a unit test)."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.domain import LeadFilter, Patch
from server.core.housekeeping import Housekeeping, Swept
from server.core.service import REQUEST_ID_TTL_US, SarahService
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository
from tests.support.helpers import Clock

PHONE = "+6281234567890"
_SECOND = 1_000_000


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sarah.db"


@pytest.fixture
def service(db_path: Path, clock: Clock) -> Iterator[SarahService]:
    db = open_database(f"sqlite:///{db_path}", pool_size=2)
    migrate(db)
    store = Repository(db)
    yield SarahService(store, clock=clock)
    store.close()


def _add_one(service: SarahService, request_id: str = "") -> int:
    patch = Patch(contact_phone=PHONE, add_messages=1, request_id=request_id)
    return service.upsert_state(patch).message_count


def _request_ids(db_path: Path) -> list[str]:
    conn = sqlite3.connect(db_path)
    try:
        return [r for (r,) in conn.execute("SELECT request_id FROM upsert_request ORDER BY 1")]
    finally:
        conn.close()


def test_a_repeated_request_id_returns_the_first_result_and_writes_nothing(
        service: SarahService, clock: Clock) -> None:
    first = service.upsert_state(Patch(contact_phone=PHONE, add_messages=1, request_id="r1"))
    clock.now += _SECOND
    again = service.upsert_state(Patch(contact_phone=PHONE, add_messages=1, request_id="r1"))
    assert again == first
    assert service.get_state(PHONE, "").message_count == 1
    assert service.get_stats(LeadFilter()).total == 1


def test_without_a_request_id_every_call_applies(service: SarahService) -> None:
    assert [_add_one(service) for _ in range(3)] == [1, 2, 3]


def test_a_request_id_is_remembered_for_24_hours(service: SarahService, clock: Clock) -> None:
    assert _add_one(service, "r1") == 1
    clock.now += REQUEST_ID_TTL_US - 1
    assert _add_one(service, "r1") == 1
    clock.now += 2
    assert _add_one(service, "r1") == 2


def test_writes_leave_expired_request_ids_to_housekeeping_which_forgets_them_in_batches(
        service: SarahService, clock: Clock, db_path: Path) -> None:
    for i in range(5):
        _add_one(service, f"r{i}")
    clock.now += REQUEST_ID_TTL_US + 1
    _add_one(service, "r5")  # a write removes nothing, however much has expired
    assert _request_ids(db_path) == [f"r{i}" for i in range(6)]
    assert [service.prune_requests(limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert _request_ids(db_path) == ["r5"]


def test_a_sweep_goes_on_until_nothing_expired_is_left(
        service: SarahService, clock: Clock, db_path: Path) -> None:
    for i in range(5):
        _add_one(service, f"r{i}")
    clock.now += REQUEST_ID_TTL_US + 1
    assert Housekeeping(service, batch=2).sweep() == Swept(requests=5)
    assert _request_ids(db_path) == []
    assert Housekeeping(service, batch=2).sweep() == Swept()
