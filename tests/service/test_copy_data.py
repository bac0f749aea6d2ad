"""`sarah-server copy-data` with history, both ways between SQLite and PostgreSQL: a source
holding pruned, merged, re-keyed and erased history and activity; after the copy the
target serves the same ListEvents, GetActivity and WatchLeads, a watcher resumes there at
the source's revisions, a second run repeats nothing, and a target with history of its
own is refused with nothing written."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy import ROOT
from harness.postgres import fresh_postgres_database
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.core.domain import Patch
from server.core.service import SarahService, now_us
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository
from tests.support.databases import query
from tests.support.helpers import DAY_US, Clock, upsert
from tests.support.servers import serving

Stub = sarah_pb2_grpc.SarahServiceStub
OLD = "+6281100000001"  # its first events are past retention: pruned
ERASED = "+6281100000002"
PHONE = "+6281100000003"
HALF = "+6281100000004"  # merged with the BSUID half
BSUID = "ID.1648738043044942"
RENUMBERED, RENUMBERED_TO = "+6281100000005", "+6281100000006"
TOKO = "+6281100000007"
KEYS: list[dict[str, str]] = [
    {"contact_phone": OLD}, {"contact_phone": ERASED}, {"contact_phone": PHONE},
    {"contact_phone": HALF}, {"business_scoped_user_id": BSUID},
    {"contact_phone": RENUMBERED}, {"contact_phone": RENUMBERED_TO},
    {"contact_phone": TOKO, "workspace_id": "toko"},
]
EVENT_ROWS = "SELECT revision, kind, contact_phone, business_scoped_user_id, at, lead_id " \
             "FROM lead_event ORDER BY revision"


def _url(kind: str, tmp_path: Path, name: str, postgres_server_url: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    return fresh_postgres_database(postgres_server_url)


@pytest.fixture(params=[("sqlite", "postgresql"), ("postgresql", "sqlite")],
                ids=["sqlite-to-postgresql", "postgresql-to-sqlite"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    server_url = request.getfixturevalue("postgres_server_url")
    source_kind, target_kind = request.param
    return (_url(source_kind, tmp_path, "source", server_url),
            _url(target_kind, tmp_path, "target", server_url))


@pytest.fixture
def source(urls: tuple[str, str]) -> str:
    """A source whose history has every kind of story, and the activity of four days."""
    url = urls[0]
    # Days ago, with a retention of one day: those events are pruned, their counts stay.
    clock = Clock(now_us() - 3 * DAY_US)
    db = open_database(url, pool_size=2)
    migrate(db)
    store = Repository(db)
    service = SarahService(store, clock=clock, history_days=1)
    service.upsert_state(Patch(contact_phone=OLD, message_count=2))
    service.upsert_state(Patch(contact_phone=OLD, add_messages=1))
    clock.now = now_us()
    through = service.history_end()
    assert through == 2 and service.prune_history(through, limit=100) == 2
    store.close()
    with _stub(url) as stub:
        upsert(stub, contact_phone=OLD, add_messages=1, lead_temperature=pb.hot)
        # Erased: its conversation row is gone (the target's ids shift), its deleted event
        # stays.
        upsert(stub, contact_phone=ERASED, extracted_data=pb.ExtractedData(name="Ani"))
        stub.DeleteState(pb.DeleteStateRequest(contact_phone=ERASED), timeout=10)
        upsert(stub, contact_phone=PHONE, message_count=3, request_id="wamid.1")
        upsert(stub, contact_phone=PHONE, add_messages=2, state=pb.handoff)
        upsert(stub, contact_phone=HALF, lead_score=10)
        upsert(stub, business_scoped_user_id=BSUID, add_messages=2)
        upsert(stub, contact_phone=HALF, business_scoped_user_id=BSUID, state=pb.completed)
        upsert(stub, contact_phone=RENUMBERED, lead_score=20)
        stub.ChangeIdentity(pb.ChangeIdentityRequest(
            contact_phone=RENUMBERED, new_contact_phone=RENUMBERED_TO), timeout=10)
        upsert(stub, contact_phone=RENUMBERED_TO, add_messages=4)
        upsert(stub, contact_phone=TOKO, workspace_id="toko", lead_temperature=pb.hot)
    return url


class _Served:
    def __init__(self, url: str) -> None:
        self._serving = serving(url)
        self._channel: grpc.Channel | None = None

    def __enter__(self) -> Stub:
        server = self._serving.__enter__()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        return sarah_pb2_grpc.SarahServiceStub(self._channel)

    def __exit__(self, *exc: Any) -> None:
        assert self._channel is not None
        self._channel.close()
        self._serving.__exit__(*exc)


def _stub(url: str) -> _Served:
    """A real server on `url` and a stub calling it, for a with block."""
    return _Served(url)


def _copy(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", "copy-data", "--source", source,
                           "--database-url", target],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def _count(url: str, table: str) -> int:
    return int(query(url, f"SELECT COUNT(*) FROM {table}")[0][0])


def _log_head(url: str) -> tuple[int, int]:
    (head,) = query(url, "SELECT revision, pruned_through FROM log_head")
    return int(head[0]), int(head[1])


def _seen(stub: Stub) -> dict[str, Any]:
    """What a caller reads of the history: every key's events (two to a page, so the
    page tokens are exercised too), and the activity of each workspace and of all."""
    history = {}
    for key in KEYS:
        events: list[pb.LeadEvent] = []
        token = ""
        while True:
            page = stub.ListEvents(pb.ListEventsRequest(page_size=2, page_token=token, **key),
                                   timeout=10)
            events += page.events
            token = page.next_page_token
            if not token:
                break
        history[str(sorted(key.items()))] = events
    activity = {workspace: list(stub.GetActivity(
        pb.GetActivityRequest(days=7, **({} if workspace is None else
                                         {"workspace_id": workspace})), timeout=10).days)
        for workspace in (None, "", "toko")}
    return {"history": history, "activity": activity}


def _watched(stub: Stub, since: int, n: int) -> list[pb.LeadEvent]:
    """The first `n` events (no heartbeat) of a watch from `since`."""
    stream: Iterator[pb.LeadEvent] = stub.WatchLeads(
        pb.WatchLeadsRequest(since_revision=since), timeout=30)
    got = []
    for event in stream:
        if event.kind != pb.heartbeat:
            got.append(event)
        if len(got) == n:
            break
    stream.cancel()
    return got


def _summary(url: str) -> str:
    return (f"copied {_count(url, 'conversation')} conversations, "
            f"{_count(url, 'upsert_request')} request ids, {_count(url, 'lead_event')} events "
            f"and {_count(url, 'activity')} activity rows")


def _ids(url: str) -> list[tuple]:
    return query(url, "SELECT contact_phone, business_scoped_user_id, id FROM conversation "
                      "ORDER BY 1, 2")


def test_the_target_serves_the_same_history_activity_and_watch_as_the_source(
        source: str, urls: tuple[str, str]) -> None:
    target = urls[1]
    done = _copy(source, target)
    assert done.returncode == 0, done.stderr
    assert _summary(source) in done.stdout
    assert _count(source, "lead_event") > 10 and _count(source, "activity") > 1
    # The rows are numbered afresh (the erased and merged leads left gaps), so the copy
    # had to re-map each event's lead to make the histories below agree.
    assert _ids(target) != _ids(source)
    assert _log_head(target) == _log_head(source)
    head, pruned = _log_head(source)
    assert pruned == 2
    retained = _count(source, "lead_event")
    with _stub(source) as stub:
        expected = _seen(stub)
        from_pruned = _watched(stub, pruned, retained)
    assert expected["history"][str([("contact_phone", HALF)])][0].conversation.\
        business_scoped_user_id == BSUID  # the merged history is there to compare
    assert sum(d.new_leads for d in expected["activity"][None]) == 7
    with _stub(target) as stub:
        assert _seen(stub) == expected
        # A watcher resumes on the target where the source's log stands: what was pruned
        # is OUT_OF_RANGE on both, and from the pruned revision on nothing is missing.
        with pytest.raises(grpc.RpcError) as stale:
            _watched(stub, pruned - 1, 1)
        assert stale.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert _watched(stub, pruned, retained) == from_pruned
        assert from_pruned[-1].revision == head
    # Run again: nothing doubles, nothing moves.
    events, activity = query(target, EVENT_ROWS), query(target, "SELECT * FROM activity")
    again = _copy(source, target)
    assert again.returncode == 0, again.stderr
    assert _summary(source) in again.stdout
    assert (query(target, EVENT_ROWS), query(target, "SELECT * FROM activity")) == (
        events, activity)


def test_a_second_run_follows_the_source_and_a_target_with_its_own_history_is_refused(
        source: str, urls: tuple[str, str]) -> None:
    target = urls[1]
    assert _copy(source, target).returncode == 0
    with _stub(source) as stub:  # the source moves on: an erasure and a new lead
        stub.DeleteState(pb.DeleteStateRequest(contact_phone=PHONE), timeout=10)
        upsert(stub, contact_phone="+6281100000008", message_count=1)
        expected = _seen(stub)
    again = _copy(source, target)
    assert again.returncode == 0, again.stderr
    assert _summary(source) in again.stdout
    head = _log_head(source)
    assert _log_head(target) == head
    phone = str([("contact_phone", PHONE)])
    with _stub(target) as stub:
        seen = _seen(stub)
        assert seen["activity"] == expected["activity"]
        # The erased lead's events are gone from the target as from the source. Its
        # conversation stays there (copy-data adds and updates leads, never deletes one),
        # so ListEvents finds that lead, which no event names any more.
        assert [pb.EventKind.Name(e.kind) for e in expected["history"][phone]] == ["deleted"]
        assert seen["history"].pop(phone) == []
        del expected["history"][phone]
        assert seen["history"] == expected["history"]
        # A watcher that had read the source to its end misses nothing of the target's
        # own writes from there.
        written = upsert(stub, contact_phone="+6281100000010", message_count=1)
        [first] = _watched(stub, head[0], 1)
        assert (first.revision, first.conversation) == (head[0] + 1, written)
    # Now the target's log has a revision the source never had: refused, nothing written.
    with _stub(source) as stub:
        upsert(stub, contact_phone="+6281100000009")
    before = [query(target, f"SELECT * FROM {table} ORDER BY 1, 2")
              for table in ("conversation", "lead_event", "activity", "log_head")]
    refused = _copy(source, target)
    assert refused.returncode == 1
    assert "the target already has a change log or activity of its own" in refused.stderr
    assert [query(target, f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("conversation", "lead_event", "activity", "log_head")] == before
