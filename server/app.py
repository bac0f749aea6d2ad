"""Builds the gRPC server: the services, health, reflection, keys, log and metrics."""

import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from sarah.v1 import sarah_pb2, sarah_pb2_grpc
from server.api.admin import SarahAdminServicer
from server.api.auth import KeyRing
from server.api.calllog import CallLog
from server.api.health import DatabaseHealth
from server.api.interceptors import (
    AuthLayer,
    CallInterceptor,
    DecodeLayer,
    Layer,
    ObserveLayer,
    UnaryLimitLayer,
    VersionLayer,
)
from server.api.metrics import Metrics
from server.api.reflection import enable_reflection
from server.api.servicer import SarahServicer
from server.config import Config
from server.core.delivery import Hub, WatchLimits
from server.core.housekeeping import Housekeeping
from server.core.service import SarahService, now_us
from server.storage.database import is_sqlite, open_database, postgres_conninfo, unreachable
from server.storage.filelock import ServingLock, serving_lock
from server.storage.migrations import migrate, require_current
from server.storage.notify import Listener
from server.storage.repository import Repository

_LOGGER = logging.getLogger(__name__)

_CALLS_MARGIN = 16
SERVICE_NAMES = tuple(s.full_name for s in sarah_pb2.DESCRIPTOR.services_by_name.values())


@dataclass
class RunningServer:
    """A started server and what its shutdown must reach."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    store: Repository
    executor: futures.ThreadPoolExecutor
    hub: Hub | None = None
    listener: Listener | None = None
    housekeeping: Housekeeping | None = None
    keys: KeyRing | None = None
    metrics: Metrics | None = None
    metrics_port: int | None = None
    database_health: DatabaseHealth | None = None
    lock: ServingLock | None = None
    call_log: CallLog | None = None

    def shutdown(self, grace: float | None, drain: float = 0.0) -> None:
        """Report NOT_SERVING, keep serving `drain` seconds while load balancers notice,
        stop accepting, let calls in flight finish, close the database."""
        self.health.enter_graceful_shutdown()
        if self.database_health is not None:
            self.database_health.stop()
        if drain > 0:
            time.sleep(drain)
        # Watch streams never end by themselves: end them first (UNAVAILABLE, so their
        # callers resume elsewhere), or they would hold the grace period to its end.
        if self.hub is not None:
            self.hub.stop()
        if self.listener is not None:
            self.listener.stop()
        self.server.stop(grace).wait()
        if self.housekeeping is not None:
            self.housekeeping.stop()
        # A call past its grace is cancelled, but its thread may still be in the database:
        # close connections only once every handler has returned.
        self.executor.shutdown(wait=True)
        if self.call_log is not None:
            self.call_log.flush()
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()
        if self.lock is not None:  # only now: see server/storage/filelock.py
            self.lock.release()


def is_loopback(listen: str) -> bool:
    """Whether host:port names a loopback address only (127.0.0.0/8, ::1, localhost)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_exposure(config: Config) -> None:
    """Without keys anyone who reaches the port may read every lead: loopback only."""
    if config.api_keys_file or config.insecure:
        return
    for what, address in (("--listen", config.listen), ("--metrics-listen",
                                                          config.metrics_listen)):
        if address and not is_loopback(address):
            raise ValueError(
                f"refusing to serve on {address} ({what}) without API keys: set "
                "SARAH_API_KEYS_FILE, or pass --insecure if something else guards it")


def _bind(address: str, bind: Callable[[str], int]) -> int:
    try:
        return bind(address)
    except (RuntimeError, OSError) as exc:
        raise OSError(f"cannot listen on {address}: {_in_use(address) or exc}") from exc


def _in_use(address: str) -> str | None:
    """Why a bind failed, if the port is taken: grpcio's error does not say."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return None
    for family, kind, proto, _name, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            # As grpcio binds: a port with only closed connections on it is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {port} is in use"
    return None


def grpc_server(executor: futures.ThreadPoolExecutor, layers: Sequence[Layer] = (),
                auth: AuthLayer | None = None,
                maximum_concurrent_rpcs: int | None = None) -> grpc.Server:
    """A grpc.Server whose one interceptor (api/interceptors.py) checks each caller's key
    with `auth` and wraps every handler in `layers`, and before any of them decodes the
    request: bytes that are not the method's message are INVALID_ARGUMENT whatever else
    is installed (status.py maps them with every other error). Beyond
    `maximum_concurrent_rpcs` calls at once, grpc refuses a call before any thread takes
    it (RESOURCE_EXHAUSTED)."""
    # grpcio sets SO_REUSEPORT by default: a second server on a served port would share
    # its connections instead of failing to start.
    return grpc.server(executor, interceptors=[CallInterceptor([DecodeLayer(), *layers], auth)],
                       options=[("grpc.so_reuseport", 0)],
                       maximum_concurrent_rpcs=maximum_concurrent_rpcs)


def create_server(config: Config, credentials: grpc.ServerCredentials | None = None,
                  clock: Callable[[], int] = now_us) -> RunningServer:
    """Start serving on `config.listen` (port 0 picks a free port) and return the handle.

    `credentials` serve TLS on that port (for a program that embeds the server; sarah-server
    itself serves plaintext on loopback behind Envoy, which terminates TLS). `clock` is the
    service's (tests set it)."""
    _check_exposure(config)
    keys = KeyRing(Path(config.api_keys_file)) if config.api_keys_file else None
    db = open_database(config.database_url, pool_size=config.db_pool_size)
    # Held for the server's life, so `sarah-server restore` refuses to replace the file.
    lock = serving_lock(db)
    store = Repository(db, group_commit=config.group_commit)

    def abandon() -> None:
        """Undo what a failed start holds: the connections, then the file's lock."""
        store.close()
        if lock is not None:
            lock.release()

    try:
        if config.migrate:
            migrate(db)
        else:
            require_current(db)
    except BaseException:
        abandon()
        raise
    service = SarahService(store, default_region=config.default_region, clock=clock,
                           history_days=config.history_days,
                           purge_inactive_days=config.purge_inactive_days)
    housekeeping = Housekeeping(service, interval=config.housekeeping_seconds)
    hub = Hub(store, WatchLimits(max_watchers=config.max_watchers, buffer=config.watch_buffer,
                                 heartbeat_seconds=config.watch_heartbeat_seconds,
                                 poll_seconds=config.watch_poll_seconds))
    store.on_commit(hub.poke)
    listener = None if is_sqlite(db) else Listener(postgres_conninfo(config.database_url),
                                                   hub.poke)
    metrics = Metrics(store.count) if config.metrics_listen else None
    call_log = CallLog()
    layers: list[Layer] = [VersionLayer(), ObserveLayer(metrics, call_log),
                           UnaryLimitLayer(config.threads, config.max_queued_calls)]
    auth = None if keys is None else AuthLayer(keys, open_reflection=config.open_reflection)
    # A streaming call holds a pool thread for its whole life: a thread per watcher on
    # top of the unary calls' (UnaryLimitLayer keeps those at config.threads).
    executor = futures.ThreadPoolExecutor(max_workers=config.threads + config.max_watchers,
                                          thread_name_prefix="sarah")
    # The backstop behind UnaryLimitLayer's bound: every call grpc has taken waits in
    # the executor's queue, unbounded, until a thread is free; past what the threads, the
    # queue, the watchers and a margin for health checks and reflection can hold, grpc
    # refuses a call itself.
    server = grpc_server(executor, layers, auth, maximum_concurrent_rpcs=(
        config.threads + config.max_queued_calls + config.max_watchers + _CALLS_MARGIN))
    sarah_pb2_grpc.add_SarahServiceServicer_to_server(SarahServicer(service, hub), server)
    admin = SarahAdminServicer(store, default_region=config.default_region)
    sarah_pb2_grpc.add_SarahAdminServiceServicer_to_server(admin, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    try:
        port = _bind(config.listen, server.add_insecure_port if credentials is None
                     else lambda address: server.add_secure_port(address, credentials))
        metrics_port = _bind(config.metrics_listen, metrics.serve) if metrics else None
    except OSError:
        abandon()
        raise
    server.start()
    if listener is not None:
        listener.start()
    database_health = DatabaseHealth(health_servicer, ("", *SERVICE_NAMES),
                                     lambda: unreachable(db), config.health_check_seconds)
    database_health.start()
    housekeeping.start()
    if keys is None:
        _LOGGER.warning("no API keys configured: every caller is let in, so the server "
                        "serves on loopback only (set SARAH_API_KEYS_FILE to require keys)")
    else:
        _LOGGER.info("API keys required: %d loaded from %s", len(keys), config.api_keys_file)
    return RunningServer(server=server, port=port, health=health_servicer, store=store,
                         executor=executor, hub=hub, listener=listener,
                         housekeeping=housekeeping, keys=keys,
                         metrics=metrics, metrics_port=metrics_port,
                         database_health=database_health, lock=lock, call_log=call_log)
