"""The upsert's unit of work on a SQLite file, with a fake clock: idempotency, the 24-hour
request_id window and the prune cadence (a file, not a socket, so it stays a unit test)."""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.core.domain import LeadFilter, Patch
from server.core.service import PRUNE_EVERY_US, REQUEST_ID_TTL_US, SarahService
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository

PHONE = "+6281234567890"
_SECOND = 1_000_000


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sarah.db"


@pytest.fixture
def service(db_path: Path, clock: _Clock) -> Iterator[SarahService]:
    db = open_database(f"sqlite:///{db_path}", pool_size=2)
    migrate(db)
    repo = Repository(db)
    yield SarahService(repo, clock=clock)
    repo.close()


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
        service: SarahService, clock: _Clock) -> None:
    first = service.upsert_state(Patch(contact_phone=PHONE, add_messages=1, request_id="r1"))
    clock.now += _SECOND
    again = service.upsert_state(Patch(contact_phone=PHONE, add_messages=1, request_id="r1"))
    assert again == first
    assert service.get_state(PHONE, "").message_count == 1
    assert service.get_stats(LeadFilter()).total == 1


def test_without_a_request_id_every_call_applies(service: SarahService) -> None:
    assert [_add_one(service) for _ in range(3)] == [1, 2, 3]


def test_a_request_id_is_remembered_for_24_hours(service: SarahService, clock: _Clock) -> None:
    assert _add_one(service, "r1") == 1
    clock.now += REQUEST_ID_TTL_US - 1
    assert _add_one(service, "r1") == 1
    clock.now += 2
    assert _add_one(service, "r1") == 2


def test_expired_request_ids_are_pruned_at_most_once_a_minute(
        service: SarahService, clock: _Clock, db_path: Path) -> None:
    start = clock.now
    _add_one(service, "r1")  # the first write prunes (nothing yet)
    clock.now = start + REQUEST_ID_TTL_US - 30 * _SECOND
    _add_one(service, "r2")  # a minute since: prunes, but r1 is not expired yet
    clock.now = start + REQUEST_ID_TTL_US + _SECOND
    _add_one(service, "r3")  # r1 has expired, but the last prune is 31 s old
    assert _request_ids(db_path) == ["r1", "r2", "r3"]
    clock.now = start + REQUEST_ID_TTL_US - 30 * _SECOND + PRUNE_EVERY_US
    _add_one(service, "r4")
    assert _request_ids(db_path) == ["r2", "r3", "r4"]


def test_a_write_without_a_request_id_does_not_prune(
        service: SarahService, clock: _Clock, db_path: Path) -> None:
    _add_one(service, "r1")
    clock.now += 2 * REQUEST_ID_TTL_US
    _add_one(service)
    assert _request_ids(db_path) == ["r1"]
