"""An in-process SarahService on a free loopback port, shut down however the block ends."""

import contextlib
from collections.abc import Iterator
from typing import Any

from server.app import RunningServer, create_server
from server.config import Config


@contextlib.contextmanager
def serving(database_url: str, **settings: Any) -> Iterator[RunningServer]:
    """create_server on 127.0.0.1:0 with `settings` as Config fields."""
    server = create_server(Config(listen="127.0.0.1:0", database_url=database_url, **settings))
    try:
        yield server
    finally:
        server.shutdown(grace=None)
