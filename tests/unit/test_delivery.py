"""Delivery to watchers (core/delivery.py) over the in-memory store: erasure wins over
delivery (contract v1.2), for a watcher whose queue still holds the erased lead's events."""

from collections.abc import Iterator

import pytest

from harness.waiting import wait_until
from server.core.changes import DELETED, HEARTBEAT, UPSERTED
from server.core.delivery import Hub, WatchLimits
from server.core.domain import Patch
from server.core.service import SarahService
from tests.support.memory_store import MemoryStore

BUDI = "+6281234567890"
SARI = "+6281298765432"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def hub(store: MemoryStore) -> Iterator[Hub]:
    hub = Hub(store, WatchLimits(heartbeat_seconds=0.05))
    store.on_commit(hub.poke)
    yield hub
    hub.stop()


def _delivered_through(hub: Hub, revision: int) -> None:
    """Until the tailer has handed every event up to `revision` to the watchers' queues."""
    wait_until(lambda: hub.delivered() >= revision, 5, f"revision {revision} delivered")


def test_an_erased_leads_queued_events_are_never_delivered(
        store: MemoryStore, hub: Hub) -> None:
    service = SarahService(store)
    events = iter(hub.watch(None, None))
    assert next(events).kind == HEARTBEAT  # the watcher has joined the fan-out

    # Budi's write reaches the watcher's queue, but the watcher takes nothing yet.
    service.upsert_state(Patch(contact_phone=BUDI, name="Budi"))
    service.upsert_state(Patch(contact_phone=SARI, name="Sari"))
    _delivered_through(hub, store.log_head()[0])
    service.delete_state(BUDI, "")
    _delivered_through(hub, store.log_head()[0])

    got = [next(events) for _ in range(2)]
    assert [(e.kind, e.lead.contact_phone if e.lead else "") for e in got] == [
        (UPSERTED, SARI), (DELETED, BUDI)]
    assert got[1].lead is not None and got[1].lead.name is None
