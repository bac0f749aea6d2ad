"""The write sequence on both databases, with a clock: request ids expire after 24 hours
and housekeeping then forgets them."""

from server.core.domain import Patch
from server.core.service import REQUEST_ID_TTL_US, SarahService
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.models import UpsertRequestRow
from server.storage.repository import Repository
from tests.support.helpers import Clock

PHONE = "+6281234567890"


def _add_one(service: SarahService, request_id: str) -> int:
    patch = Patch(contact_phone=PHONE, add_messages=1, request_id=request_id)
    return service.upsert_state(patch).message_count


def test_request_id_expires_after_24_hours_and_is_pruned(database_url: str) -> None:
    clock = Clock()
    db = open_database(database_url)
    migrate(db)
    store = Repository(db)
    service = SarahService(store, clock=clock)
    try:
        assert _add_one(service, "wamid.1") == 1
        clock.now += REQUEST_ID_TTL_US - 1
        assert _add_one(service, "wamid.1") == 1  # still within 24 hours: not applied again
        clock.now += 2
        assert _add_one(service, "wamid.1") == 2  # a day later it is a new request
        clock.now += REQUEST_ID_TTL_US + 1
        assert _add_one(service, "wamid.2") == 3
        assert service.prune_requests(limit=500) == 1
        with db.connection_context():
            assert [r.request_id for r in UpsertRequestRow.select()] == ["wamid.2"]
    finally:
        store.close()
