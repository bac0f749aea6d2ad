"""Prometheus metrics of one server: calls by method and code, latencies, conversations."""

import logging
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LOGGER = logging.getLogger(__name__)
# Calls take a millisecond or two; a stuck database shows at the 5 s lock wait.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Conversations(Collector):
    """The number of conversations, counted when Prometheus scrapes."""

    def __init__(self, count: Callable[[], int]):
        self._count = count

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("sarah_conversations", "Conversations stored")
        try:
            gauge.add_metric([], self._count())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail with the database
            _LOGGER.warning("cannot count conversations for metrics: %s", exc)
            return
        yield gauge


class Metrics:
    """One registry per server, so servers in one process (tests) never share counts."""

    def __init__(self, count_conversations: Callable[[], int]):
        self.registry = CollectorRegistry()
        self._calls = Counter("sarah_calls", "gRPC calls by method and status code",
                              ["method", "code"], registry=self.registry)
        self._latency = Histogram("sarah_call_duration_seconds", "gRPC call latency",
                                  ["method"], buckets=_BUCKETS, registry=self.registry)
        self.registry.register(_Conversations(count_conversations))
        self._http: WSGIServer | None = None
        # Each label set's child, found once: labels() checks and locks on every call,
        # which cost two thirds of observe() (a few microseconds a call).
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = self._children[(method, code)] = (self._calls.labels(method, code),
                                                         self._latency.labels(method))
        calls, latency = children
        calls.inc()
        latency.observe(seconds)

    def serve(self, address: str) -> int:
        """Serve /metrics on host:port (port 0 picks one); return the port."""
        host, _, port = address.rpartition(":")
        self._http, _thread = start_http_server(int(port), addr=host.strip("[]"),
                                                registry=self.registry)
        return int(self._http.server_address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
