"""Server interceptors: one log line per call with method, status and duration."""

import logging
import time

import grpc

_LOGGER = logging.getLogger("server.calls")
# Envoy checks health every second; logging each check would bury the calls that matter.
_QUIET_PREFIX = "/grpc.health.v1.Health/"


class CallLogInterceptor(grpc.ServerInterceptor):
    """Logs every unary call once it ends: method, status code, milliseconds."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(_QUIET_PREFIX):
            return handler
        inner = handler.unary_unary

        # Envoy sends x-request-id, which its access log shows too: one id joins both lines.
        request_id = dict(handler_call_details.invocation_metadata or ()).get("x-request-id", "-")

        def logged(request, context):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK
                _LOGGER.info(
                    "call method=%s code=%s duration_ms=%.2f request_id=%s",
                    method, code.name, (time.perf_counter() - start) * 1000, request_id,
                )

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
