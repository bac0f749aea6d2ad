"""Every error path of the contract over gRPC: the code, each bad field named, nothing
written. UpsertState's full validation table runs as a unit test
(tests/unit/test_upsert_validation.py); here some of its cases prove the mapping."""

import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.api import convert
from server.api.servicer import SarahServicer
from server.app import grpc_server
from server.core.delivery import Hub
from server.core.errors import InvalidArgument
from server.core.service import SarahService
from server.storage import database
from server.storage.database import open_database
from server.storage.migrations import migrate
from server.storage.repository import Repository
from tests.support.databases import write_lock
from tests.support.helpers import PHONE, bad_fields, get, upsert, violations
from tests.support.memory_store import MemoryStore

LONG = "x" * 4097  # a slot holds up to 4,096 characters


# The whole table of bad upserts runs over the use case in tests/unit/test_upsert_validation.py;
# these cases go through gRPC to prove that every violation core names reaches the caller
# as a BadRequest field violation, with its reason, and that nothing was written.
@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"contact_phone": "08123", "lead_score": 500, "workspace_id": "a b"},
         {"contact_phone", "lead_score", "workspace_id"}),
        ({"contact_phone": PHONE, "extracted_data": pb.ExtractedData(pain_points=["ok", LONG])},
         {"extracted_data.pain_points[1]"}),
        ({"contact_phone": ""}, {"contact_phone", "business_scoped_user_id"}),
    ],
)
def test_invalid_upsert_names_each_bad_field_and_writes_nothing(stub, fields, named) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=33)
    with pytest.raises(InvalidArgument) as expected:
        SarahService(MemoryStore()).upsert_state(
            convert.patch_from_proto(pb.UpsertStateRequest(**fields)))
    with pytest.raises(grpc.RpcError) as caught:
        upsert(stub, **fields)
    assert bad_fields(caught.value) == named
    assert violations(caught.value) == expected.value.violations
    assert get(stub, PHONE).lead_score == 33
    assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.GetState(pb.GetStateRequest(contact_phone="08123"), timeout=10),
        lambda s: s.DeleteState(pb.DeleteStateRequest(contact_phone="not a phone"), timeout=10),
        lambda s: s.GetState(pb.GetStateRequest(contact_phone=PHONE, workspace_id="?"),
                             timeout=10),
    ],
)
def test_reads_and_deletes_validate_the_key(stub, call) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(stub)
    assert bad_fields(caught.value) & {"contact_phone", "workspace_id"}


@pytest.mark.parametrize(
    ("request_fields", "named"),
    [
        ({"order_by": "name asc"}, {"order_by"}),
        ({"page_token": "not-a-token"}, {"page_token"}),
        ({"page_size": -1}, {"page_size"}),
        ({"min_score": 101}, {"min_score"}),
        ({"temperature": 5}, {"temperature"}),
        ({"workspace_id": "bad/ws"}, {"workspace_id"}),
    ],
)
def test_invalid_list_request_is_invalid_argument(stub, request_fields, named) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListLeads(pb.ListLeadsRequest(**request_fields), timeout=10)
    assert bad_fields(caught.value) == named


def test_page_token_of_another_query_is_refused(stub) -> None:
    for i in range(3):
        upsert(stub, contact_phone=f"+1415555012{i}", lead_score=i)
    page = stub.ListLeads(pb.ListLeadsRequest(page_size=1), timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListLeads(pb.ListLeadsRequest(page_size=1, order_by="created_at desc",
                                           page_token=page.next_page_token), timeout=10)
    assert bad_fields(caught.value) == {"page_token"}


def test_stats_validates_workspace(stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetStats(pb.GetStatsRequest(workspace_id="x" * 65), timeout=10)
    assert bad_fields(caught.value) == {"workspace_id"}


_SHORT_LOCK_WAIT_MS = 300


@pytest.fixture
def short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's wait for a held write lock (LOCK_WAIT_MS, 5 s: SQLite's busy timeout,
    PostgreSQL's lock_timeout, the writer queue) cut short, for a server started after
    this fixture. Every server module that took a copy of the constant gets the short one."""
    for name, module in list(sys.modules.items()):
        if name.startswith("server.") and hasattr(module, "LOCK_WAIT_MS"):
            monkeypatch.setattr(module, "LOCK_WAIT_MS", _SHORT_LOCK_WAIT_MS)
    monkeypatch.setitem(database._SQLITE_PRAGMAS, "busy_timeout", _SHORT_LOCK_WAIT_MS)


def test_locked_database_is_unavailable_not_unknown(short_lock_wait, stub, database_url
                                                    ) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=1)
    with write_lock(database_url):
        with pytest.raises(grpc.RpcError) as caught:
            upsert(stub, contact_phone=PHONE, lead_score=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "lock" in caught.value.details() and "retry" in caught.value.details()
    # It recovers by itself once the lock is gone.
    assert upsert(stub, contact_phone=PHONE, lead_score=3).lead_score == 3


def test_writer_waits_for_a_short_lock_instead_of_failing(stub, database_url) -> None:
    upsert(stub, contact_phone=PHONE, lead_score=1)
    with write_lock(database_url) as lock:
        threading.Timer(0.5, lock.release).start()
        assert upsert(stub, contact_phone=PHONE, lead_score=2).lead_score == 2


# Bytes that are not a GetStateRequest: a string field (1) whose two bytes are not UTF-8, and
# a field tag that runs off the end.
UNDECODABLE = [b"\x0a\x02\xff\xfe", b"\xff\xff\xff"]


def _assert_undecodable_is_invalid_argument(channel: grpc.Channel) -> None:
    # No serializers: bytes in, bytes out.
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        "/sarah.v1.SarahService/GetState")
    for sent in UNDECODABLE:
        with pytest.raises(grpc.RpcError) as caught:
            raw(sent, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, sent
        assert "does not decode" in (caught.value.details() or ""), sent
    # The same path still serves a request that decodes.
    stub = sarah_pb2_grpc.SarahServiceStub(channel)
    assert stub.GetState(pb.GetStateRequest(contact_phone=PHONE), timeout=10).etag == ""


def test_undecodable_bytes_are_invalid_argument(channel: grpc.Channel) -> None:
    _assert_undecodable_is_invalid_argument(channel)


@pytest.fixture
def bare_server(tmp_path: Path) -> Iterator[int]:
    """The service with no interceptor of its own: no call log, no metrics, no keys."""
    db = open_database(f"sqlite:///{tmp_path / 'sarah.db'}")
    migrate(db)
    store = Repository(db)
    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc_server(executor)
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(
        SarahServicer(SarahService(store), Hub(store)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None).wait()
    executor.shutdown(wait=True)
    store.close()


def test_undecodable_bytes_are_invalid_argument_without_the_call_log(bare_server: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{bare_server}") as channel:
        _assert_undecodable_is_invalid_argument(channel)
