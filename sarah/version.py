"""The version of the installed sarah-service distribution, one answer for every part.

It lives in `sarah`, beside the generated stubs, because the server and the client both
import this package already: `sarah --version` can use it without pulling in anything of
the server's (Envoy, PostgreSQL, the phone-number database).
"""

from importlib import metadata

DISTRIBUTION = "sarah-service"


def version() -> str:
    """The version pyproject.toml declared when the package was installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # a bare checkout on PYTHONPATH, never installed
        return "unknown (not installed)"
