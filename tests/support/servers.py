"""An in-process SarahService on a free loopback port, shut down however the block ends."""

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from client import SarahClient
from harness.waiting import wait_until
from server.app import RunningServer, create_server
from server.config import Config
from server.core.service import now_us
from tests.support.helpers import DAY_US, PHONE, Clock


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


def pruned_server(db: Path) -> RunningServer:
    """A server over `db` whose change log no longer holds revisions 1 and 2: written a
    day and more before its clock's now, with a day of history, and pruned by housekeeping."""
    clock = Clock(now_us())
    config = Config(listen="127.0.0.1:0", database_url=f"sqlite:///{db}", history_days=1,
                    housekeeping_seconds=0.05, workers=1, metrics_listen="")
    running = create_server(config, clock=clock)
    with SarahClient(f"127.0.0.1:{running.port}") as sarah:
        sarah.upsert_state(contact_phone=PHONE, lead_score=1)
        sarah.upsert_state(contact_phone=PHONE, lead_score=2)
        clock.now += DAY_US + 1
        sarah.upsert_state(contact_phone=PHONE, lead_score=3)
    wait_until(lambda: running.store.log_head() == (3, 2), 20, "revisions 1-2 to be pruned")
    return running
