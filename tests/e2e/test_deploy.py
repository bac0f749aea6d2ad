"""deploy/envoy_config.py: each derivation changes only what it names, and Envoy accepts it."""

import re
import subprocess
from pathlib import Path

import pytest

from deploy import ROOT
from deploy import envoy_config as derive
from deploy.pod import ENVOY_HEAP_BYTES
from harness.envoy import EnvoyProcess
from harness.waiting import wait_until
from server.config import Config
from tests.support.certificates import make_certificates
from tests.support.servers import serving
from tools.edge_tls import install


def _endpoint_ports(config: derive.Config) -> list[int]:
    (cluster,) = config["static_resources"]["clusters"]
    (group,) = cluster["load_assignment"]["endpoints"]
    return [e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in group["lb_endpoints"]]


def test_with_ports_moves_the_three_ports_and_nothing_else() -> None:
    original = derive.load()
    moved = derive.with_ports(original, http=18080, admin=19901, upstream=15051)
    (listener,) = moved["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1",
                                                     "port_value": 18080}
    assert moved["admin"]["address"]["socket_address"]["port_value"] == 19901
    assert _endpoint_ports(moved) == [15051]
    assert derive.with_ports(moved, http=8080, admin=9901, upstream=50051) == original
    assert original == derive.load(), "the input is left as it was"


def test_with_replicas_lists_each_port_and_outlier_detection_ejects() -> None:
    spread = derive.with_replicas(derive.load(), [50051, 50052, 50053])
    spread = derive.with_outlier_detection(spread)
    assert _endpoint_ports(spread) == [50051, 50052, 50053]
    (cluster,) = spread["static_resources"]["clusters"]
    assert cluster["outlier_detection"]["max_ejection_percent"] == 34


def test_circuit_breakers_grow_with_the_replicas_and_the_call_limit_sets_calls_only() -> None:
    def limits(config: derive.Config) -> dict[str, tuple[int, int, int]]:
        (cluster,) = config["static_resources"]["clusters"]
        return {t["priority"]: (t["max_requests"], t["max_pending_requests"], t["max_retries"])
                for t in cluster["circuit_breakers"]["thresholds"]}

    one = limits(derive.load())
    # One server's defaults: the calls it runs and queues, and its watchers.
    calls, watchers = Config().threads + Config().max_queued_calls, Config().max_watchers
    assert one == {"DEFAULT": (calls, calls, 3), "HIGH": (watchers, watchers, 3)}
    assert (calls, watchers) == (24, 256)
    three = derive.with_replicas(derive.load(), [50051, 50052, 50053])
    assert limits(three) == {"DEFAULT": (72, 72, 3), "HIGH": (768, 768, 3)}
    assert limits(derive.with_replicas(three, [50051])) == one
    assert limits(derive.with_call_limit(three, 5)) == {"DEFAULT": (5, 5, 3),
                                                        "HIGH": (768, 768, 3)}


def test_with_absolute_descriptor_names_the_checkouts_file() -> None:
    text = derive.dump(derive.with_absolute_descriptor(derive.load()))
    assert f"proto_descriptor: {ROOT / 'sarah' / 'v1' / 'sarah.pb'}" in text
    assert f"filename: {ROOT / 'dashboard' / 'index.html'}" in text  # the page at `/`


def test_cors_origins_are_read_as_a_browser_sends_them() -> None:
    def read(value: str) -> list[str]:
        return derive.configured_cors_origins({"SARAH_CORS_ORIGINS": value})

    assert derive.configured_cors_origins({}) == [] and read(" , ") == []
    assert read("https://Dash.Example.com/, http://localhost:5173,HTTPS://dash.example.com:443,"
                "http://[::1]:8080") == ["https://dash.example.com", "http://localhost:5173",
                                         "http://[::1]:8080"]
    for wrong in ("dash.example.com", "https://dash.example.com/app", "*", "https://*.example",
                  "ftp://dash.example.com", "https://user@dash.example.com",
                  "https://dash.example.com:99999", "https://dash.example.com?x=1"):
        named = re.escape(f"SARAH_CORS_ORIGINS: {wrong!r} is not an origin")
        with pytest.raises(ValueError, match=named):
            read(f"https://ok.example, {wrong}")


def test_with_cors_origins_fills_the_policy_and_replaces_an_earlier_list() -> None:
    def origins(config: derive.Config) -> list[str]:
        (listener,) = config["static_resources"]["listeners"]
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert manager["http_filters"][0]["name"] == "envoy.filters.http.cors"  # first
        (host,) = manager["route_config"]["virtual_hosts"]
        policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
        return [match["exact"] for match in policy["allow_origin_string_match"]]

    shipped = derive.load()
    assert origins(shipped) == [] and derive.with_cors_origins(shipped, []) == shipped
    once = derive.with_cors_origins(shipped, ["https://a.example"])
    twice = derive.with_cors_origins(derive.with_cors_origins(shipped, ["https://b.example"]),
                                     ["https://a.example"])
    assert origins(once) == ["https://a.example"] and twice == once
    assert derive.with_cors_origins(once, []) == once  # none given: the config's stay


@pytest.mark.parametrize("variant", ["ports", "replicas", "tls", "rate limit", "cors", "pod"])
def test_envoy_accepts_every_variant(variant: str, tmp_path: Path) -> None:
    _, cert, key = make_certificates(tmp_path)
    install(tmp_path / "tls", cert.read_bytes(), key.read_bytes())
    sds = str(tmp_path / "tls" / "sds.yaml")
    change = {
        "ports": lambda c: derive.with_ports(c, http=18080, admin=19901, upstream=15051),
        "replicas": lambda c: derive.with_outlier_detection(derive.with_replicas(c, [1, 2])),
        "tls": lambda c: derive.with_tls(c, sds, listen="127.0.0.1:8443"),
        "rate limit": lambda c: derive.with_rate_limit(c, 5, seconds=60, burst=10),
        "cors": lambda c: derive.with_cors_origins(
            c, ["https://dash.example.com", "http://localhost:5173"]),
        "pod": lambda c: derive.with_health_endpoints(derive.with_heap_limit(
            derive.with_public_listener(c), ENVOY_HEAP_BYTES)),
    }[variant]
    config = tmp_path / "envoy.yaml"
    config.write_text(derive.dump(change(derive.with_absolute_descriptor(derive.load()))))
    done = subprocess.run([*derive.envoy_command(config), "--mode", "validate"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_health_paths_say_whether_envoy_and_its_server_can_serve(tmp_path: Path) -> None:
    """What the kubelet asks of a Pod's Envoy (deploy/kubernetes/deployment.yaml): live while
    Envoy runs; ready only while its server passes Envoy's gRPC health check, and not once
    the server drains (SIGTERM reports NOT_SERVING first)."""
    with serving(f"sqlite:///{tmp_path / 'sarah.db'}") as server:
        envoy = EnvoyProcess(server.port, tmp_path, derive=derive.with_health_endpoints)
        try:
            envoy.wait_healthy(1)
            assert envoy.call("GET", derive.LIVE_PATH)[0] == 200
            assert envoy.call("GET", derive.READY_PATH)[0] == 200
            assert envoy.call("GET", "/sarah/stats")[0] == 200  # the API is as it was
            server.health.enter_graceful_shutdown()
            wait_until(lambda: envoy.call("GET", derive.READY_PATH)[0] == 503, 10,
                       "Envoy to find its server draining")
            assert envoy.call("GET", derive.LIVE_PATH)[0] == 200
        finally:
            envoy.stop()
