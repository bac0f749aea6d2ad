"""Server interceptors: one log line per call with method, status and duration."""

import logging
import time

import grpc

_LOGGER = logging.getLogger("server.calls")


class CallLogInterceptor(grpc.ServerInterceptor):
    """Logs every unary call once it ends: method, status code, milliseconds."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        def logged(request, context):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK
                _LOGGER.info(
                    "call method=%s code=%s duration_ms=%.2f",
                    method, code.name, (time.perf_counter() - start) * 1000,
                )

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
