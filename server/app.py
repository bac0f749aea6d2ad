"""Builds the gRPC server: the service, health, reflection and the call log, on one port."""

import logging
import time
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sarah.v1 import sarah_pb2, sarah_pb2_grpc
from server.admin import SarahAdminServicer
from server.config import Config
from server.database import open_database
from server.interceptors import CallLogInterceptor
from server.migrations import migrate, require_current
from server.reflection import enable_reflection
from server.service import SarahService
from server.servicer import SarahServicer
from server.store import Store

_LOGGER = logging.getLogger(__name__)

SERVICE_NAMES = tuple(s.full_name for s in sarah_pb2.DESCRIPTOR.services_by_name.values())


@dataclass
class RunningServer:
    """A started server and what its shutdown must reach."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    store: Store

    def shutdown(self, grace: float | None, drain: float = 0.0) -> None:
        """Report NOT_SERVING, keep serving `drain` seconds while load balancers notice,
        stop accepting, let calls in flight finish, close the database."""
        self.health.enter_graceful_shutdown()
        if drain > 0:
            time.sleep(drain)
        self.server.stop(grace).wait()
        self.store.close()


def create_server(config: Config) -> RunningServer:
    """Start serving on `config.listen` (port 0 picks a free port) and return the handle."""
    db = open_database(config.database_url, pool_size=config.db_pool_size)
    if config.migrate:
        migrate(db)
    else:
        require_current(db)
    store = Store(db)
    service = SarahService(store, default_region=config.default_region)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="sarah"),
        interceptors=[CallLogInterceptor()],
    )
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(SarahServicer(service), server)
    admin = SarahAdminServicer(store, default_region=config.default_region)
    sarah_pb2_grpc.add_SarahAdminServiceServicer_to_server(admin, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError as exc:
        store.close()
        raise OSError(f"cannot listen on {config.listen}: {exc}") from exc
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=port, health=health_servicer, store=store)
