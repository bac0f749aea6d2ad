"""Fixtures: a real SarahService on a free loopback port over a real SQLite file."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sarah.v1 import sarah_pb2_grpc
from server.app import RunningServer, create_server
from server.config import Config
from tests.helpers import ServerProcess


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sarah.db"


@pytest.fixture
def running(db_path: Path) -> Iterator[RunningServer]:
    server = create_server(Config(listen="127.0.0.1:0", database_url=f"sqlite:///{db_path}"))
    yield server
    server.shutdown(grace=None)


@pytest.fixture
def channel(running: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> sarah_pb2_grpc.SarahServiceStub:
    return sarah_pb2_grpc.SarahServiceStub(channel)


@pytest.fixture
def server_process(db_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess("--listen", "127.0.0.1:0", "--database-url", f"sqlite:///{db_path}")
    yield proc
    if proc.proc.poll() is None:
        proc.proc.kill()
        proc.proc.wait()
