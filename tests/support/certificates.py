"""A throwaway certificate authority and a certificate it signs, for Envoy's TLS listener
(tools/certificates.py makes them: the tests and `tools.edge_tls --throwaway` alike)."""

from pathlib import Path

from tools.certificates import write_throwaway


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf it signs for localhost and 127.0.0.1: (ca, cert, key)."""
    return write_throwaway(folder, ["localhost", "127.0.0.1"])
