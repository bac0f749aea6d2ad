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


class AtCapacity(Exception):
    """The server runs and queues as many calls as it may: this one is refused at once
    (UNAVAILABLE) with advice on when to retry, instead of waiting in a queue until its
    deadline passes."""

    def __init__(self, running: int, waiting: int):
        super().__init__(f"the server is at capacity ({running} calls running, {waiting} "
                         f"waiting): retry after {RETRY_AFTER_S} s")


# Retry advice of a refused call (at capacity, or UNAVAILABLE for any other reason: the
# database is down or failing over, a write lost a race), in the trailing metadata:
# `grpc-retry-pushback-ms` is what a gRPC client's retry policy reads (gRFC A6),
# `retry-after` what an HTTP caller reads (a trailers-only answer's metadata reaches Envoy
# as headers, and the HTTP caller gets a 503 with retry-after).
RETRY_AFTER_S = 1
_RETRY_ADVICE = (("retry-after", str(RETRY_AFTER_S)),
                 ("grpc-retry-pushback-ms", str(RETRY_AFTER_S * 1000)))


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


# Each kind of error and its code, most specific first (SarahError is the catch-all of the
# domain's refusals).
_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (Undecodable, grpc.StatusCode.INVALID_ARGUMENT),
    (AtCapacity, grpc.StatusCode.UNAVAILABLE),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (EtagMismatch, grpc.StatusCode.ABORTED),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (SarahError, grpc.StatusCode.FAILED_PRECONDITION),
)


def _code_of(exc: Exception) -> grpc.StatusCode | None:
    """The status code `exc` stands for; None for a bug. (An InvalidArgument never gets
    here: abort() ends its call first, with details.)"""
    return next((code for kind, code in _CODES if isinstance(exc, kind)), None)


def abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """End the call with the status that `exc` stands for."""
    if isinstance(exc, InvalidArgument):
        # With google.rpc.BadRequest details naming every bad field. Like abort(), it
        # raises, so nothing below runs for an InvalidArgument.
        context.abort_with_status(rpc_status.to_status(_bad_request(exc)))
    if isinstance(exc, (AtCapacity, Unavailable)):
        context.set_trailing_metadata(_RETRY_ADVICE)
    code = _code_of(exc)
    if code is not None:
        context.abort(code, str(exc))
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
