"""Failed calls as readable text: the status code, the server's message, the bad fields."""

import logging
from collections.abc import Iterable

import grpc
from google.rpc.error_details_pb2 import BadRequest
from google.rpc.status_pb2 import Status

_LOGGER = logging.getLogger(__name__)

_DETAILS_KEY = "grpc-status-details-bin"


def _bad_fields(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[str]:
    """`field: why` for each violation in google.rpc.BadRequest details, if any were sent."""
    found: list[str] = []
    for key, value in metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in Status.FromString(value).details:
            bad_request = BadRequest()
            if detail.Unpack(bad_request):
                found += [f"{v.field}: {v.description}" for v in bad_request.field_violations]
    return found


def describe(err: grpc.RpcError) -> str:
    """One message for a failed call of SarahClient or AsyncSarahClient.

    The first line is ``CODE: the server's message``; an INVALID_ARGUMENT adds one line per
    bad field, read from its google.rpc.BadRequest details.
    """
    if not isinstance(err, grpc.Call | grpc.aio.AioRpcError):
        return str(err) or type(err).__name__
    lines = [f"{err.code().name}: {err.details()}"]
    lines += [f"  {field}" for field in _bad_fields(err.trailing_metadata())]
    return "\n".join(lines)
