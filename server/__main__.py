"""`python -m server` / `sarah-server`: serve until SIGTERM or SIGINT, then drain and exit."""

import logging
import signal
import sys
from pathlib import Path

import peewee

from server import commands
from server.app import create_server
from server.commands import ADMIN_COMMANDS
from server.config import Config, parse_args
from server.core.errors import Unavailable
from server.logs import setup_logging
from server.signals import Signals
from server.storage.database import redact_url
from server.supervise import supervise

_LOGGER = logging.getLogger("server")


def _moved(address: str, offset: int) -> str:
    host, _, port = address.rpartition(":")
    return f"{host}:{int(port) + offset}" if int(port) else address


def _run_workers(config: Config, argv: list[str]) -> int:
    """Run config.worker_count single-process servers, worker i on the ports + i, as one.

    gRPC's SO_REUSEPORT would spread connections, not requests, and Envoy keeps few
    connections open: on one shared port a process can sit idle. Own ports let Envoy
    balance requests (list each as an endpoint of its cluster).
    """
    commands = {}
    for i in range(config.worker_count):
        own = ["--workers", "1", "--listen", _moved(config.listen, i)]
        if config.metrics_listen:
            own += ["--metrics-listen", _moved(config.metrics_listen, i)]
        commands[f"worker-{i}"] = [sys.executable, "-m", "server", *argv, *own]
    banner = f"SarahService: {config.worker_count} worker processes from {config.listen}"
    # SIGHUP means what it means to one server: re-read the keys file (each worker does).
    return supervise(commands, banner, Path.cwd(), forward_hangup=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ADMIN_COMMANDS:
        return commands.main(argv)
    config = parse_args(argv)
    if config.worker_count > 1:
        return _run_workers(config, argv)
    setup_logging(config.log_format, [config.database_url])
    # Handlers first: a signal that lands while the server starts (or right after it says
    # it listens) must not find Python's defaults, which end the process on the spot.
    signals = Signals(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    try:
        running = create_server(config)
    except (OSError, ValueError, RuntimeError, peewee.PeeweeException, Unavailable) as exc:
        # A driver's error may quote the URL whole: the log's filter hides its password.
        _LOGGER.error("cannot start: %s", exc)
        return 1
    host = config.listen.rsplit(":", 1)[0]
    _LOGGER.info("listening on %s:%d (database %s, region %s, %d threads)",
                 host, running.port, redact_url(config.database_url), config.default_region,
                 config.threads)
    if running.metrics_port is not None:
        _LOGGER.info("metrics on http://%s:%d/metrics",
                     config.metrics_listen.rpartition(":")[0], running.metrics_port)
    reloads = 0

    def stopping() -> bool:
        nonlocal reloads
        if signals.count(signal.SIGHUP) != reloads:  # SIGHUP: re-read the keys file
            reloads = signals.count(signal.SIGHUP)
            if running.keys is not None:
                running.keys.reload()
        return bool(signals.count(signal.SIGTERM) or signals.count(signal.SIGINT))

    signals.wait_for(stopping)
    _LOGGER.info("shutting down: finishing calls in flight (grace %.0fs)", config.grace_seconds)
    running.shutdown(config.grace_seconds, drain=config.drain_seconds)
    _LOGGER.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
