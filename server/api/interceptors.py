"""Server interceptors: the call log and metrics, and API-key authentication."""

import logging
import time

import grpc

from server.api.auth import ALL_WORKSPACES, KeyRing, PermissionDenied, presented_key, scope_to_key
from server.api.metrics import Metrics

_LOGGER = logging.getLogger("server.calls")
# Envoy checks health every second; logging each check would bury the calls that matter.
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."


def _unary(handler: grpc.RpcMethodHandler, behavior) -> grpc.RpcMethodHandler:  # type: ignore[no-untyped-def]
    """`handler` with `behavior`, decoding the request itself: grpc's own decoding answers
    bytes that are not the method's message (or strings that are not UTF-8) with INTERNAL."""
    deserialize = handler.request_deserializer

    def decoding(raw, context):  # type: ignore[no-untyped-def]
        try:
            request = deserialize(raw) if deserialize else raw
        except Exception:  # noqa: BLE001 - DecodeError, and whatever a codec may raise
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "the request does not decode as this method's message "
                          "(malformed bytes, or text that is not UTF-8)")
        return behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        decoding, request_deserializer=None, response_serializer=handler.response_serializer)


class ObserveInterceptor(grpc.ServerInterceptor):
    """Logs every unary call once it ends (method, status, milliseconds, Envoy's request
    id) and counts it in the metrics."""

    def __init__(self, metrics: Metrics | None = None):
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(HEALTH_PREFIX):
            return handler
        inner = handler.unary_unary
        # Envoy sends x-request-id, which its access log shows too: one id joins both lines.
        request_id = dict(handler_call_details.invocation_metadata or ()).get("x-request-id", "-")

        def observed(request, context):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                seconds = time.perf_counter() - start
                code = (context.code() or grpc.StatusCode.OK).name
                if self._metrics is not None:
                    self._metrics.observe(method, code, seconds)
                fields = {"method": method, "code": code,
                          "duration_ms": round(seconds * 1000, 2), "request_id": request_id}
                _LOGGER.info("call method=%s code=%s duration_ms=%.2f request_id=%s",
                             method, code, seconds * 1000, request_id,
                             extra={"fields": fields})

        return _unary(handler, observed)


def _rejections(code: grpc.StatusCode, message: str) -> dict[str, grpc.RpcMethodHandler]:
    """A handler of each call shape that ends the call with `code`."""

    def reject(_request, context):  # type: ignore[no-untyped-def]
        context.abort(code, message)

    return {
        "unary_unary": grpc.unary_unary_rpc_method_handler(reject),
        "unary_stream": grpc.unary_stream_rpc_method_handler(reject),
        "stream_unary": grpc.stream_unary_rpc_method_handler(reject),
        "stream_stream": grpc.stream_stream_rpc_method_handler(reject),
    }


def _shape(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_unary:
        return "unary_unary"
    if handler.unary_stream:
        return "unary_stream"
    return "stream_unary" if handler.stream_unary else "stream_stream"


class AuthInterceptor(grpc.ServerInterceptor):
    """Every call needs a known API key, except health checks (and reflection if open);
    a key bound to a workspace reaches only that workspace."""

    def __init__(self, keys: KeyRing, open_reflection: bool):
        self._keys = keys
        self._open = (HEALTH_PREFIX, REFLECTION_PREFIX) if open_reflection else (HEALTH_PREFIX,)
        self._unauthenticated = _rejections(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or unknown API key: send `authorization: Bearer KEY` or `x-api-key: KEY`")

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._open):
            return handler
        presented = presented_key(tuple(handler_call_details.invocation_metadata or ()))
        key = self._keys.find(presented) if presented else None
        if key is None:
            return self._unauthenticated[_shape(handler)]
        if key.workspace == ALL_WORKSPACES or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        def scoped(request, context):  # type: ignore[no-untyped-def]
            try:
                scope_to_key(key, request)
            except PermissionDenied as exc:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            return inner(request, context)

        return _unary(handler, scoped)
