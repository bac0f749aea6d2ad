"""TLS at the edge: envoy.yaml with its public listener terminating TLS.

    python -m tools.edge_tls --cert PATH --key PATH [--listen HOST:PORT] [--out FILE]
    SARAH_ENVOY_CONFIG=data/envoy-tls.yaml make run

The certificate (PEM, the full chain) and its private key are read by Envoy from the paths
given, at start-up; the written config names them as absolute paths. Everything else --
routes, transcoder, local replies, limits -- is envoy.yaml's, so the two never drift apart.
The listener then speaks only TLS: HTTP/1.1 and HTTP/2 (gRPC) chosen by ALPN, TLS 1.2 or
newer. Upstream, Envoy still talks plaintext h2c to the server on loopback.
"""

import argparse
import logging
import sys
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_OUT = Path("data/envoy-tls.yaml")  # relative, like SARAH_ENVOY_CONFIG
_LISTENER = "sarah_http"
_TLS_CONTEXT = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def _downstream_tls(cert_path: str, key_path: str) -> dict[str, object]:
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


def tls_envoy_config(base_yaml: str, cert_path: str, key_path: str,
                     listen: str | None = None) -> str:
    """`base_yaml` (envoy.yaml) with TLS on its public listener's every filter chain.

    `listen` (HOST:PORT) moves the listener, e.g. to 0.0.0.0:8443 for a public address;
    by default it stays where `base_yaml` puts it.
    """
    import yaml

    config = yaml.safe_load(base_yaml)
    listener = next(item for item in config["static_resources"]["listeners"]
                    if item["name"] == _LISTENER)
    for chain in listener["filter_chains"]:
        chain["transport_socket"] = _downstream_tls(cert_path, key_path)
    if listen:
        host, _, port = listen.rpartition(":")
        listener["address"]["socket_address"] = {"address": host.strip("[]"),
                                                 "port_value": int(port)}
    return yaml.safe_dump(config, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.edge_tls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cert", required=True, type=Path,
                        help="PEM certificate chain, leaf first")
    parser.add_argument("--key", required=True, type=Path, help="PEM private key of the leaf")
    parser.add_argument("--listen", help="HOST:PORT of the TLS listener "
                        "(default: envoy.yaml's, 127.0.0.1:8080)")
    parser.add_argument("--base", type=Path, default=_ROOT / "envoy.yaml",
                        help="the config to derive from (default: envoy.yaml)")
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT,
                        help="where to write it (default: data/envoy-tls.yaml)")
    args = parser.parse_args(argv)
    for what, path in (("--cert", args.cert), ("--key", args.key)):
        if not path.is_file():
            parser.error(f"{what} {path}: no such file")
    if args.listen and not args.listen.rpartition(":")[2].isdigit():
        parser.error(f"--listen {args.listen}: expected HOST:PORT")
    text = tls_envoy_config(args.base.read_text(), str(args.cert.resolve()),
                            str(args.key.resolve()), args.listen)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: TLS with {args.cert} on the public listener; start it with "
          f"SARAH_ENVOY_CONFIG={args.out} make run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
