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
import sys
from pathlib import Path

from deploy.envoy_config import ENVOY_YAML, dump, load, with_tls

_DEFAULT_OUT = Path("data/envoy-tls.yaml")  # relative, like SARAH_ENVOY_CONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.edge_tls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cert", required=True, type=Path,
                        help="PEM certificate chain, leaf first")
    parser.add_argument("--key", required=True, type=Path, help="PEM private key of the leaf")
    parser.add_argument("--listen", help="HOST:PORT of the TLS listener "
                        "(default: envoy.yaml's, 127.0.0.1:8080)")
    parser.add_argument("--base", type=Path, default=ENVOY_YAML,
                        help="the config to derive from (default: envoy.yaml)")
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT,
                        help="where to write it (default: data/envoy-tls.yaml)")
    args = parser.parse_args(argv)
    for what, path in (("--cert", args.cert), ("--key", args.key)):
        if not path.is_file():
            parser.error(f"{what} {path}: no such file")
    if args.listen and not args.listen.rpartition(":")[2].isdigit():
        parser.error(f"--listen {args.listen}: expected HOST:PORT")
    text = dump(with_tls(load(args.base), str(args.cert.resolve()), str(args.key.resolve()),
                         args.listen))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}: TLS with {args.cert} on the public listener; start it with "
          f"SARAH_ENVOY_CONFIG={args.out} make run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
