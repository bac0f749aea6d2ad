"""TLS at the edge: envoy.yaml with its public listener terminating TLS, the certificate
served from a folder Envoy watches, so a renewed one is served without a restart.

    python -m tools.edge_tls install --dir data/tls --cert FULLCHAIN --key KEY
    python -m tools.edge_tls install --dir data/tls --throwaway localhost,127.0.0.1
    python -m tools.edge_tls config --dir data/tls [--listen HOST:PORT] [--rate-limit N/Ss]
    SARAH_ENVOY_CONFIG=data/envoy-tls.yaml make run

`install` copies a certificate chain (leaf first) and its key into a new version folder
under --dir and swaps the folder's `live` symlink to it in one rename; Envoy, reading the
pair by SDS from `sds.yaml` there, sees the rename and serves the new pair from the next
handshake on. Run it again with each renewed certificate (a certbot deploy hook, say).
It refuses a key that is not the certificate's, or a certificate not valid now, so Envoy
never sees a broken pair. `--throwaway NAMES` issues the certificate from a throwaway CA
kept in --dir/throwaway-ca (made on first use; clients trust its ca.crt), to try it out.

`config` writes the Envoy config: envoy.yaml with TLS on its listener (HTTP/1.1 and HTTP/2,
so gRPC, by ALPN; TLS 1.2 or newer), the browser origins of $SARAH_CORS_ORIGINS allowed (as
it is set when `config` runs), and everything else -- routes, transcoder, local replies,
limits -- unchanged. Upstream, Envoy still talks plaintext h2c to the server on
loopback.
"""

import argparse
import datetime
import os
import re
import shutil
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.envoy_config import (
    ENVOY_YAML,
    configured_cors_origins,
    dump,
    load,
    rate_limit,
    sds_secret,
    with_absolute_descriptor,
    with_cors_origins,
    with_rate_limit,
    with_tls,
)
from tools import certificates

_DEFAULT_DIR = Path("data/tls")
_DEFAULT_OUT = Path("data/envoy-tls.yaml")  # relative, like SARAH_ENVOY_CONFIG
_KEEP_VERSIONS = 2  # the live one and the one before it


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _write_sds(folder: Path) -> Path:
    """folder/sds.yaml, written only when missing or different: Envoy re-reads it when it
    is replaced."""
    path = folder / "sds.yaml"
    text = dump(sds_secret(str(folder))).encode()
    if not path.exists() or path.read_bytes() != text:
        _write_atomically(path, text)
    return path


def _throwaway_pair(folder: Path, names: list[str]) -> tuple[bytes, bytes]:
    """A certificate for `names` from the throwaway CA in folder/throwaway-ca, made the
    first time; the same CA issues every renewal, so clients trusting its ca.crt go on."""
    ca_dir = folder / "throwaway-ca"
    ca_crt, ca_key = ca_dir / "ca.crt", ca_dir / "ca.key"
    if ca_crt.exists() and ca_key.exists():
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key}: not the throwaway CA's key")
        authority = certificates.Authority(x509.load_pem_x509_certificate(ca_crt.read_bytes()),
                                           key)
    else:
        ca_dir.mkdir(parents=True, exist_ok=True)
        authority = certificates.new_authority()
        _write_atomically(ca_key, certificates.private_key_pem(authority.key), 0o600)
        _write_atomically(ca_crt, certificates.certificate_pem(authority))
    issued = certificates.issue(authority, names)
    return issued.chain_pem, issued.key_pem


def install(folder: Path, chain_pem: bytes, key_pem: bytes) -> Path:
    """The pair as folder/live (a new version folder, swapped in by one rename), and
    folder/sds.yaml for Envoy; the folder's versions beyond the last two are removed.
    ValueError if the pair is not one Envoy could serve."""
    leaf = certificates.check_pair(chain_pem, key_pem)
    folder = folder.resolve()
    versions = folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    version = versions / f"{stamp}-{leaf.serial_number:x}"[:64]
    version.mkdir()
    _write_atomically(version / "tls.crt", chain_pem)
    _write_atomically(version / "tls.key", key_pem, 0o600)
    _write_sds(folder)
    swap = folder / ".live.new"
    swap.unlink(missing_ok=True)
    swap.symlink_to(version.relative_to(folder))
    os.replace(swap, folder / "live")  # the moment Envoy sees: a move into the folder
    for old in sorted(versions.iterdir())[:-_KEEP_VERSIONS]:
        shutil.rmtree(old)
    return version


def parse_rate(text: str) -> tuple[int, int]:
    """CALLS/SECONDSs, e.g. 300/1s, as (calls, seconds)."""
    match = re.fullmatch(r"(\d+)/(\d+)s", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CALLS/SECONDSs, e.g. 300/1s")
    return int(match[1]), int(match[2])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.edge_tls", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    put = commands.add_parser("install", help="install or renew the certificate Envoy serves")
    put.add_argument("--dir", type=Path, default=_DEFAULT_DIR,
                     help="the certificate folder (default: data/tls; made if missing)")
    put.add_argument("--cert", type=Path, help="PEM certificate chain, leaf first")
    put.add_argument("--key", type=Path, help="PEM private key of the leaf, unencrypted")
    put.add_argument("--throwaway", metavar="NAMES",
                     help="instead of --cert/--key: a certificate for these comma-separated "
                     "host names and addresses, from a throwaway CA")
    derive = commands.add_parser("config", help="write the Envoy config that serves it")
    derive.add_argument("--dir", type=Path, default=_DEFAULT_DIR,
                        help="the certificate folder `install` filled (default: data/tls)")
    derive.add_argument("--listen", help="HOST:PORT of the TLS listener "
                        "(default: envoy.yaml's, 127.0.0.1:8080)")
    derive.add_argument("--rate-limit", type=parse_rate, metavar="CALLS/SECONDSs",
                        help="calls per API key (default: the --base config's; "
                        "envoy.yaml's is 300/1s, 2,000 at once)")
    derive.add_argument("--burst", type=int, help="calls per API key at once "
                        "(default: CALLS of --rate-limit)")
    derive.add_argument("--base", type=Path, default=ENVOY_YAML,
                        help="the config to derive from (default: envoy.yaml)")
    derive.add_argument("--out", type=Path, default=_DEFAULT_OUT,
                        help="where to write it (default: data/envoy-tls.yaml)")
    return parser


def _install(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.throwaway:
        if args.cert or args.key:
            parser.error("--throwaway issues its own certificate: give it or --cert/--key")
        names = [name.strip() for name in args.throwaway.split(",") if name.strip()]
        chain, key = _throwaway_pair(args.dir.resolve(), names)
    else:
        if not (args.cert and args.key):
            parser.error("install needs --cert and --key (or --throwaway NAMES)")
        for what, path in (("--cert", args.cert), ("--key", args.key)):
            if not path.is_file():
                parser.error(f"{what} {path}: no such file")
        chain, key = args.cert.read_bytes(), args.key.read_bytes()
    try:
        version = install(args.dir, chain, key)
    except ValueError as bad:
        parser.error(f"not installed, Envoy keeps the certificate it has: {bad}")
    serial = certificates.check_pair(chain, key).serial_number
    print(f"installed certificate serial {serial:x} as {args.dir}/live -> {version.name}; "
          "a running Envoy serves it from the next connection on")
    return 0


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        origins = configured_cors_origins()
    except ValueError as bad:
        parser.error(str(bad))
    folder = args.dir.resolve()
    if not (folder / "live" / "tls.crt").is_file():
        parser.error(f"--dir {args.dir}: no certificate installed yet; run "
                     f"`python -m tools.edge_tls install --dir {args.dir} ...` first")
    if args.listen and not args.listen.rpartition(":")[2].isdigit():
        parser.error(f"--listen {args.listen}: expected HOST:PORT")
    # Its files (the descriptor, the dashboard page) named absolutely: the config is used
    # from data/, and may be started from any folder.
    config = with_absolute_descriptor(with_tls(load(args.base), str(_write_sds(folder)),
                                               args.listen))
    config = with_cors_origins(config, origins)
    if args.rate_limit or args.burst:
        calls, seconds = args.rate_limit or rate_limit(config)[:2]
        config = with_rate_limit(config, calls, seconds, args.burst)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(config))
    cors = f", CORS for {', '.join(origins)}" if origins else ""
    print(f"wrote {args.out}: TLS on the public listener, the certificate from "
          f"{args.dir}/live{cors}; start it with SARAH_ENVOY_CONFIG={args.out} make run")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return _install(parser, args) if args.command == "install" else _config(parser, args)


if __name__ == "__main__":
    sys.exit(main())
