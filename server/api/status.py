"""The one place where errors become gRPC status codes: the domain's errors, requests that
do not decode, and bugs."""

import functools
import logging
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.core.errors import (
    EtagMismatch,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    SarahError,
    Unavailable,
)

_LOGGER = logging.getLogger(__name__)


class Undecodable(Exception):
    """The request's bytes are not the method's message (or hold text that is not UTF-8)."""

    def __init__(self) -> None:
        super().__init__("the request does not decode as this method's message "
                         "(malformed bytes, or text that is not UTF-8)")


def _bad_request(exc: InvalidArgument) -> status_pb2.Status:
    details = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=why)
            for field, why in exc.violations
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(details)
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=f"invalid request: {exc}", details=[packed]
    )


def abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """End the call with the status that `exc` stands for."""
    if isinstance(exc, InvalidArgument):
        context.abort_with_status(rpc_status.to_status(_bad_request(exc)))
    if isinstance(exc, Undecodable):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, PermissionDenied):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    if isinstance(exc, NotFound):
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, EtagMismatch):
        context.abort(grpc.StatusCode.ABORTED, str(exc))
    if isinstance(exc, OutOfRange):
        context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
    if isinstance(exc, ResourceExhausted):
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, Unavailable):
        context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
    if isinstance(exc, SarahError):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    # A bug: the caller gets no traceback, the log gets all of it.
    _LOGGER.exception("unexpected error")
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Method = Callable[[_Servicer, _Request, grpc.ServicerContext], _Response]


def mapped(method: _Method[_Servicer, _Request, _Response]
           ) -> _Method[_Servicer, _Request, _Response]:
    """Decorates a servicer method: every exception ends the call with its mapped status,
    never UNKNOWN."""

    @functools.wraps(method)
    def wrapper(self: _Servicer, request: _Request, context: grpc.ServicerContext) -> _Response:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - abort() maps every kind
            abort(context, exc)

    return wrapper
