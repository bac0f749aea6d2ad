"""The per-API-key rate limit of the shipped envoy.yaml is sized for a Kapso campaign
(contract v1.2, "Rate limits"): 1,000 calls with one key sent back to back, 16 in flight,
all succeed through the real Envoy and server, with nothing else on the path (Envoy's
circuit breaker, the server's own bound) refusing them; past the limit a call gets a JSON
429 with retry-after."""

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploy import ROOT
from deploy.envoy_config import Config as EnvoyConfig
from deploy.envoy_config import load, rate_limit, with_rate_limit
from harness.envoy import EnvoyProcess
from harness.processes import ServerProcess
from server.config import Config
from tests.support.docs import docs_section

CALLS = 1_000
IN_FLIGHT = 16
KEY, WORKSPACE = "sk_kapso-campaign", "campaign"
# Another key, its own bucket: the checks after a test's calls spend none of KEY's.
CHECKING_KEY = "sk_operations"
_HEADERS = {"content-type": "application/json", "x-api-key": KEY}
_SHIPPED = load()


@pytest.fixture
def keyed_server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """`python -m server` requiring API keys, so that Envoy's per-key limit applies to every
    call; one worker process, the tightest case (Envoy's circuit breaker then holds 24 calls,
    and `make run` starts one a CPU)."""
    server = _server(database_url, tmp_path)
    yield server
    server.stop()


def _server(database_url: str, workdir: Path) -> ServerProcess:
    keys = workdir / "api-keys.txt"
    keys.write_text(f"{KEY} {WORKSPACE} a Kapso project\n{CHECKING_KEY} * operations\n")
    return ServerProcess("--listen", "127.0.0.1:0", "--database-url", database_url,
                         "--api-keys-file", str(keys))


def _envoy(server: ServerProcess, workdir: Path,
           derive: Callable[[EnvoyConfig], EnvoyConfig] | None = None) -> EnvoyProcess:
    # Two worker threads, as `make run`'s Envoy has on a 2-CPU host (one per CPU).
    envoy = EnvoyProcess(server.port, workdir, concurrency=2, derive=derive)
    with envoy.stopped_on_failure():
        envoy.wait_healthy(1)
    return envoy


def _post(conn: http.client.HTTPConnection, i: int) -> tuple[int, dict[str, str], bytes]:
    """One Kapso save of lead `i` on a kept-alive connection."""
    body = {"contact_phone": f"+6281300{i:05d}", "workspace_id": WORKSPACE, "add_messages": 1,
            "request_id": f"wamid.campaign-{i}", "state": "qualifying", "lead_score": i % 101}
    conn.request("POST", "/sarah/state", json.dumps(body), _HEADERS)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _send(port: int, leads: range) -> Counter[int]:
    """A POST per lead from IN_FLIGHT threads, each on its own keep-alive connection: the
    count of each status answered."""
    local = threading.local()
    opened: list[http.client.HTTPConnection] = []

    def status(i: int) -> int:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            opened.append(local.conn)
        return _post(local.conn, i)[0]

    try:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            return Counter(pool.map(status, leads))
    finally:
        for conn in opened:
            conn.close()


def _total(envoy: EnvoyProcess) -> object:
    status, _, stats = envoy.call("GET", f"/sarah/stats?workspace_id={WORKSPACE}",
                                  headers={"x-api-key": CHECKING_KEY})
    assert status == 200 and isinstance(stats, dict), stats
    return stats["total"]


def test_a_campaign_of_1000_calls_with_one_key_16_in_flight_all_succeed(
        keyed_server: ServerProcess, tmp_path: Path, backend: str) -> None:
    envoy = _envoy(keyed_server, tmp_path)
    try:
        started = time.perf_counter()
        statuses = _send(envoy.port, range(CALLS))
        took = time.perf_counter() - started
        print(f"\n{CALLS} calls with one key, {IN_FLIGHT} in flight, on {backend}: "
              f"{took:.2f} s ({CALLS / took:.0f} a second)")
        assert statuses == {200: CALLS}, statuses  # no 429, no 503
        assert envoy.stat("sarah_api_key.http_local_rate_limit.rate_limited") == 0
        assert envoy.stat("cluster.sarah_grpc.upstream_rq_pending_overflow") == 0
        assert _total(envoy) == CALLS  # every save written, each once
    finally:
        envoy.stop()


def test_past_the_limit_a_call_gets_429_with_retry_after(tmp_path: Path) -> None:
    """The shipped bucket (2,000) is too big to empty quickly in a test: the same config
    with a bucket of IN_FLIGHT calls an hour, spent by IN_FLIGHT calls at once."""
    server = _server(f"sqlite:///{tmp_path / 'sarah.db'}", tmp_path)
    try:
        envoy = _envoy(server, tmp_path, derive=lambda config: with_rate_limit(
            config, 1, seconds=3600, burst=IN_FLIGHT))
        try:
            assert _send(envoy.port, range(IN_FLIGHT)) == {200: IN_FLIGHT}
            forwarded = envoy.stat("cluster.sarah_grpc.upstream_rq_total")
            conn = http.client.HTTPConnection("127.0.0.1", envoy.port, timeout=30)
            try:
                status, headers, body = _post(conn, IN_FLIGHT)
            finally:
                conn.close()
            assert status == 429, body
            assert headers["retry-after"] == "3600", headers
            assert headers["content-type"].startswith("application/json"), headers
            error = json.loads(body)
            assert set(error) == {"code", "message"} and error["code"] == 8, error
            assert "too many requests for this API key" in error["message"], error
            # Refused at Envoy: the server never saw it, and nothing was written.
            assert envoy.stat("cluster.sarah_grpc.upstream_rq_total") == forwarded
            assert _total(envoy) == IN_FLIGHT
        finally:
            envoy.stop()
    finally:
        server.stop()


def test_the_shipped_limit_fits_a_campaign_and_nothing_else_refuses_16_at_once() -> None:
    requests, seconds, burst = rate_limit(_SHIPPED)
    assert (requests, seconds, burst) == (300, 1, 2_000)
    # What tools.stack and tools.edge_tls read as the default, as with_rate_limit writes it.
    assert rate_limit(with_rate_limit(_SHIPPED, 5, seconds=60, burst=10)) == (5, 60, 10)
    # The whole campaign fits the burst alone, however slowly the host answers.
    assert burst >= CALLS
    manager = _SHIPPED["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    [limit] = [f["typed_config"] for f in manager["typed_config"]["http_filters"]
               if f["name"] == "envoy.filters.http.local_ratelimit"]
    # An x-api-key and a bearer token get the same bucket; over it, come back in a fill.
    assert all(d["token_bucket"] == limit["descriptors"][0]["token_bucket"]
               for d in limit["descriptors"])
    assert [h["header"]["value"] for h in limit["response_headers_to_add"]
            if h["header"]["key"] == "retry-after"] == [str(seconds)]
    # What else could answer 503 to 16 calls at once: Envoy's circuit breaker, and the
    # server's own bound (its threads and queue, per process).
    [cluster] = [c for c in _SHIPPED["static_resources"]["clusters"] if c["name"] == "sarah_grpc"]
    [breaker] = [t for t in cluster["circuit_breakers"]["thresholds"]
                 if t["priority"] == "DEFAULT"]
    assert min(breaker["max_requests"], breaker["max_pending_requests"]) >= IN_FLIGHT
    assert Config().threads + Config().max_queued_calls >= IN_FLIGHT


def test_the_docs_state_the_shipped_limit() -> None:
    requests, seconds, burst = rate_limit(_SHIPPED)
    docs = " ".join(docs_section("docs/kapso.md", "Envoy's own answers").split())
    assert f"bucket of {burst:,} calls, refilled at {requests} a second" in docs
    assert f"`retry-after: {seconds}`" in docs
    # It names the line to edit as envoy.yaml has it.
    [line] = [line.strip() for line in (ROOT / "envoy.yaml").read_text().splitlines()
              if "token_bucket: &per_key" in line]
    assert f"`{line}`" in docs
