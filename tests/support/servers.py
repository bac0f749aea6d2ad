"""An in-process SarahService on a free loopback port, shut down however the block ends."""

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from server.app import RunningServer, create_server
from server.config import Config
from server.core.service import now_us


@contextlib.contextmanager
def serving(database_url: str, credentials: grpc.ServerCredentials | None = None,
            clock: Callable[[], int] = now_us, **settings: Any) -> Iterator[RunningServer]:
    """create_server on 127.0.0.1:0 with `settings` as Config fields (one process, no
    metrics page unless they say otherwise), over TLS with `credentials`, and the service's
    `clock`."""
    config = Config(**{"listen": "127.0.0.1:0", "database_url": database_url, "workers": 1,
                       "metrics_listen": "", **settings})
    server = create_server(config, credentials, clock=clock)
    try:
        yield server
    finally:
        server.shutdown(grace=None)
