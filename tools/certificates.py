"""Certificates with the `cryptography` package: a throwaway certificate authority and the
server certificates it issues (to try TLS at the edge, and for the tests), and the checks
`python -m tools.edge_tls install` makes before Envoy sees a pair."""

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = datetime.timedelta(days=30)
_SKEW = datetime.timedelta(minutes=5)  # clocks a little behind still accept it


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes  # the leaf, then the authority's certificate
    key_pem: bytes
    serial: int


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def new_authority(common_name: str = "SarahService throwaway CA") -> Authority:
    """A self-signed CA, valid for 30 days, that issues server certificates only."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW).not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue(authority: Authority, names: list[str]) -> Issued:
    """A server certificate for `names` (host names or IP addresses, the first one also its
    common name), with a new key and a new random serial, signed by `authority`."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    serial = x509.random_serial_number()
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0])).issuer_name(authority.certificate.subject)
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(now - _SKEW).not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName([_alternative_name(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM)
                     for c in (leaf, authority.certificate))
    return Issued(chain, private_key_pem(key), serial)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_pem(authority: Authority) -> bytes:
    return authority.certificate.public_bytes(serialization.Encoding.PEM)


def check_pair(chain_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """The leaf of a PEM chain, once it is certain the key is the leaf's and the leaf is
    valid now; ValueError, saying which, otherwise."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as bad:
        raise ValueError(f"the certificate file holds no PEM certificate ({bad})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as bad:
        raise ValueError(f"the key file holds no unencrypted PEM private key ({bad})") from None
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, public)
            != key.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ValueError("the key is not the first certificate's: is the leaf first in the "
                         "chain, and is this its key?")
    now = datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ValueError(f"the certificate is valid from {leaf.not_valid_before_utc} to "
                         f"{leaf.not_valid_after_utc}, not now")
    return leaf


def write_throwaway(folder: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A new CA and a certificate it issues for `names`, written as PEM files into `folder`
    (made if missing): (ca.crt, tls.crt, tls.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = new_authority()
    issued = issue(authority, names)
    paths = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    paths[0].write_bytes(certificate_pem(authority))
    paths[1].write_bytes(issued.chain_pem)
    paths[2].touch(mode=0o600)
    paths[2].write_bytes(issued.key_pem)
    return paths
