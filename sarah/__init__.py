"""The sarah.v1 API's generated code, and the one version number everything reports.

VERSION is pyproject.toml's, read from the installed distribution's metadata: `sarah
--version`, `sarah-server --version` and the `sarah-version` header of every response say
the same number.
"""

from importlib import metadata

DISTRIBUTION = "sarah-service"
VERSION = metadata.version(DISTRIBUTION)
