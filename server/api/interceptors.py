"""What the server does around every call, in one grpc interceptor (CallInterceptor) made
of layers: request decoding, the version trailer, the call log and metrics, the bound on
unary calls, API-key authentication."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from contextvars import ContextVar
from queue import SimpleQueue
from typing import Any, Protocol, TypeAlias, cast

import grpc

from sarah import VERSION
from server.api import status
from server.api.auth import KeyRing, presented_key, set_caller_scope
from server.api.calllog import CallLog
from server.api.metrics import Metrics
from server.logs import REQUEST_ID

# Envoy checks health every second; logging each check would bury the calls that matter.
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
# Set by UnaryLimitLayer when it refuses the call (inside ObserveLayer, in the call's
# thread and Context).
SHED: ContextVar[bool] = ContextVar("shed", default=False)
_MOST_WRAPPED = 1000  # wrapped handlers kept; the server has a few dozen methods

# Handlers carry messages of many types; an interceptor passes them on without looking.
# (Generic in types-grpcio only, hence the quotes.)
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], _Handler | None]"
_Behavior = Callable[[Any, grpc.ServicerContext], Any]


class _EndedContext(Protocol):
    """grpc's servicer context tells the code a call ended with (types-grpcio omits it)."""

    def code(self) -> grpc.StatusCode | None: ...


# grpc's handler factory of each call shape, by the attribute that holds its behaviour.
_HANDLER_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _behavior_of(handler: _Handler) -> tuple[str, _Behavior]:
    """The call shape of `handler` and its behaviour."""
    return next((shape, getattr(handler, shape)) for shape in _HANDLER_FACTORIES
                if getattr(handler, shape) is not None)


def _with_behavior(handler: _Handler, behavior: _Behavior) -> _Handler:
    """`handler` with `behavior` in place of its own, for the same call shape and messages."""
    shape, _ = _behavior_of(handler)
    return _HANDLER_FACTORIES[shape](
        behavior, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class Layer(Protocol):
    """One thing done around calls: `wrap` gives the handler to serve `method` with in
    place of `handler` (`handler` itself where the layer has nothing to add). It runs
    once per method, not per call."""

    def wrap(self, method: str, handler: _Handler) -> _Handler: ...


class CallInterceptor(grpc.ServerInterceptor):
    """The server's one interceptor: the key check of each call (`auth`, the only layer
    with work per call before the handler runs), then the handler wrapped by `layers`,
    the first outermost.

    One interceptor rather than one per layer: grpc runs interceptors in the thread that
    serves every connection's events, one call after the other, so every link of a chain
    is paid by every call in that one thread, where the bare servicer pays nothing (the
    profiles: bench/README.md, "Where the time goes"). Each method's wrapped handler is
    built once, as a method's handler is the same object on every call. (Two threads may
    build one at the same time; either serves.) A handler made for each call by something
    else is not kept past a bound, rather than grow the dict."""

    def __init__(self, layers: Sequence[Layer], auth: AuthLayer | None = None):
        self._layers = tuple(reversed(layers))  # innermost first, as they are applied
        self._auth = auth
        self._built: dict[tuple[str, Hashable], _Handler] = {}

    def intercept_service(self, continuation: _Continuation,
                          handler_call_details: grpc.HandlerCallDetails) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if self._auth is not None:
            handler = self._auth.admit(handler_call_details, handler)
        key = (handler_call_details.method, handler)
        built = self._built.get(key)
        if built is None:
            built = handler
            for layer in self._layers:
                built = layer.wrap(key[0], built)
            if len(self._built) < _MOST_WRAPPED:
                self._built[key] = built
        return built


class DecodeLayer:
    """Decodes every unary request itself, so that bytes that are not the method's message
    (or strings that are not UTF-8) are INVALID_ARGUMENT, mapped in status.py: grpc's own
    decoding answers them with INTERNAL. Put it first, so it wraps all the others."""

    @staticmethod
    def wrap(method: str, handler: _Handler) -> _Handler:
        if handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        deserialize, behavior = handler.request_deserializer, handler.unary_unary
        assert deserialize is not None and behavior is not None

        def decoding(raw: bytes, context: grpc.ServicerContext) -> Any:
            try:
                request = deserialize(raw)
            except Exception:  # noqa: BLE001 - DecodeError, and whatever a codec may raise
                status.abort(context, status.Undecodable())
            return behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            decoding, request_deserializer=None,
            response_serializer=handler.response_serializer)


class ObserveLayer:
    """Counts every unary call in the metrics once it ends, and reports it to the call log
    (api/calllog.py: method, status, milliseconds, Envoy's request id)."""

    def __init__(self, metrics: Metrics | None = None, call_log: CallLog | None = None):
        self._metrics = metrics
        self._call_log = call_log if call_log is not None else CallLog()

    def wrap(self, method: str, handler: _Handler) -> _Handler:
        if handler.unary_unary is None or method.startswith(HEALTH_PREFIX):
            return handler
        inner = handler.unary_unary
        assert inner is not None
        metrics, call_log = self._metrics, self._call_log

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            # Envoy sends x-request-id, which its access log shows too: one id joins both.
            request_id = next((value for key, value in context.invocation_metadata()
                               if key == "x-request-id"), "-")
            bound = REQUEST_ID.set(str(request_id))  # for the lines the call itself logs
            shed = SHED.set(False)
            try:
                return inner(request, context)
            finally:
                refused = SHED.get()
                REQUEST_ID.reset(bound)
                SHED.reset(shed)
                seconds = time.perf_counter() - start
                code = (cast(_EndedContext, context).code() or grpc.StatusCode.OK).name
                if metrics is not None:
                    metrics.observe(method, code, seconds)
                call_log.record(method, code, seconds, str(request_id),
                                routine=True if refused else None)

        return _with_behavior(handler, observed)


def _rejections(code: grpc.StatusCode, message: str) -> dict[str, _Handler]:
    """A handler of each call shape that ends the call with `code`."""

    def reject(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    return {
        "unary_unary": grpc.unary_unary_rpc_method_handler(reject),
        "unary_stream": grpc.unary_stream_rpc_method_handler(reject),
        "stream_unary": grpc.stream_unary_rpc_method_handler(reject),
        "stream_stream": grpc.stream_stream_rpc_method_handler(reject),
    }


def _shape(handler: _Handler) -> str:
    if handler.unary_unary:
        return "unary_unary"
    if handler.unary_stream:
        return "unary_stream"
    return "stream_unary" if handler.stream_unary else "stream_stream"


class AuthLayer:
    """Every call needs a known API key, except health checks (and reflection if open).
    It settles only who calls: which workspaces that caller reaches is the service's rule
    (core/scope.py), applied to the scope recorded here."""

    def __init__(self, keys: KeyRing, open_reflection: bool):
        self._keys = keys
        self._open = (HEALTH_PREFIX, REFLECTION_PREFIX) if open_reflection else (HEALTH_PREFIX,)
        self._unauthenticated = _rejections(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or unknown API key: send `authorization: Bearer KEY` or `x-api-key: KEY`")

    def admit(self, handler_call_details: grpc.HandlerCallDetails, handler: _Handler
              ) -> _Handler:
        """`handler`, or for a caller without a known key one that refuses the call."""
        if handler_call_details.method.startswith(self._open):
            return handler
        presented = presented_key(tuple(handler_call_details.invocation_metadata or ()))
        key = self._keys.find(presented) if presented else None
        if key is None:
            return self._unauthenticated[_shape(handler)]
        # grpc runs this and the call's handler in one Context of their own: the handler
        # sees this scope, and no other call does.
        set_caller_scope(key.scope)
        return handler


class UnaryLimitLayer:
    """At most `limit` unary calls run at once and at most `queue` more wait their turn; a
    call beyond those is refused at once, UNAVAILABLE with retry advice (status.AtCapacity).

    The thread pool has a thread per unary slot plus one per allowed watcher (a
    server-streaming call holds its pool thread for its whole life): without this bound,
    unary calls could spread over the watchers' threads too and the database pool would
    see more callers than before; with it, watchers can never starve unary calls, and
    unary calls never take a watcher's thread for long.

    The queue is bounded because an overloaded server that queues every call answers none
    of them in time: each waits behind all the others until its deadline, so every caller
    times out while the server works on calls nobody waits for any more. Refused at once,
    the excess retries later or elsewhere, and the admitted calls finish in time. Health
    checks pass by both bounds: refusing them would take a busy server out of Envoy's
    cluster (and they touch no database)."""

    def __init__(self, limit: int, queue: int):
        # A token per slot in a SimpleQueue, and a count under a plain lock, rather than
        # threading's semaphores: those are Python code around a Condition, whose notify
        # on every release showed in the profile (py-spy, issue 14); these are C.
        self._slots: SimpleQueue[None] = SimpleQueue()
        for _ in range(limit):
            self._slots.put(None)
        self._counting = threading.Lock()
        self._admitted = 0  # calls running or waiting for a slot
        self._limit, self._queue = limit, queue

    def _admit(self) -> bool:
        with self._counting:
            if self._admitted >= self._limit + self._queue:
                return False
            self._admitted += 1
            return True

    def _leave(self) -> None:
        with self._counting:
            self._admitted -= 1

    def wrap(self, method: str, handler: _Handler) -> _Handler:
        if handler.unary_unary is None or method.startswith(HEALTH_PREFIX):
            return handler
        inner = handler.unary_unary
        assert inner is not None

        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._admit():
                SHED.set(True)  # for the call log: a refusal of many, not a failure
                status.abort(context, status.AtCapacity(self._limit, self._queue))
            try:
                self._slots.get()
                try:
                    return inner(request, context)
                finally:
                    self._slots.put(None)
            finally:
                self._leave()

        return _with_behavior(handler, limited)


VERSION_HEADER = "sarah-version"
_VERSION_METADATA = ((VERSION_HEADER, VERSION),)


class VersionLayer:
    """Adds VERSION to the trailing metadata of every call, of every shape: grpcurl -v and
    any client read it, rejected calls included (it wraps the key check's refusals too).
    gRPC reflection has no field for a version; this is where a caller of the reflected
    API finds it.

    Trailing, not initial: initial metadata sent before the handler runs would commit the
    response's headers at once, and Envoy retries a call on another replica only while it
    has no response headers (a replica killed mid-call failed its calls); it would also
    end a refused stream's trailers-only answer, which the transcoder needs to give an
    HTTP error status."""

    @staticmethod
    def wrap(method: str, handler: _Handler) -> _Handler:
        _, behavior = _behavior_of(handler)
        wrap = _versioned_stream if handler.response_streaming else _versioned
        return _with_behavior(handler, wrap(behavior))


def _add_version(context: grpc.ServicerContext) -> None:
    # After the handler: an error's abort_with_status has set its own trailers by then.
    context.set_trailing_metadata((*(context.trailing_metadata() or ()), *_VERSION_METADATA))


def _versioned(behavior: Any) -> Any:
    def versioned(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        finally:
            _add_version(context)

    return versioned


def _versioned_stream(behavior: Any) -> Any:
    def versioned(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from behavior(request, context)
        finally:
            _add_version(context)

    return versioned
