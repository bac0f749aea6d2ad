"""Helpers shared by the tests: calls in one line, and the contract's sample values."""


import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc

KAPSO_BODY = {
    "contact_phone": "+6281234567890", "state": "qualifying", "lead_score": 45,
    "lead_temperature": "warm",
    "extracted_data": {"name": "Budi", "business_type": "restaurant", "team_size": 5},
    "language": "id", "message_count": 3,
}
PHONE = "+6281234567890"
DAY_US = 24 * 3600 * 1_000_000


class Clock:
    """A service clock the test sets (microseconds since the epoch)."""

    def __init__(self, now: int = 1_000_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def upsert(stub: sarah_pb2_grpc.SarahServiceStub, **fields: object) -> pb.Conversation:
    """UpsertState with keyword fields; returns the stored conversation."""
    return stub.UpsertState(pb.UpsertStateRequest(**fields), timeout=10)


def get(stub: sarah_pb2_grpc.SarahServiceStub, phone: str, workspace: str = "") -> pb.Conversation:
    request = pb.GetStateRequest(contact_phone=phone, workspace_id=workspace)
    return stub.GetState(request, timeout=10)


def violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of each violation in the google.rpc.BadRequest details of an
    INVALID_ARGUMENT error."""
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    status = rpc_status.from_call(err)
    assert status is not None, "INVALID_ARGUMENT without rich details"
    found: list[tuple[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def bad_fields(err: grpc.RpcError) -> set[str]:
    """The field names of the google.rpc.BadRequest details of an INVALID_ARGUMENT error."""
    return {field for field, _ in violations(err)}
