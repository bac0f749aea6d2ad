"""A full disk: writes get UNAVAILABLE saying so (never INTERNAL), reads go on, nothing is
half-written, and the same server process writes again once space returns.

The disk is a real one: a small tmpfs mounted for the test (root only), filled up with a
file. For PostgreSQL the database lives in a tablespace on that tmpfs.
"""

import errno
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import grpc
import psycopg
import pytest

from harness.processes import ServerProcess
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from tests.support.databases import is_postgres, query
from tests.support.helpers import PHONE

# What the caller must be told: the disk (or the database) is full, in words.
_SAYS_FULL = re.compile(r"(?i)\b(disk|database|storage)\b[^;]*\bfull\b|no space left on device")
_BIG = "x" * 500  # a lead of ~10 KiB needs fresh pages, which a full disk cannot give
_names = itertools.count()


@contextmanager
def small_disk(size: str, owner: int | None = None) -> Iterator[Path]:
    """A tmpfs of `size` mounted on a fresh folder (world-traversable, as PostgreSQL's own
    user must reach it), unmounted after."""
    parent = Path(tempfile.mkdtemp(prefix="sarah-disk-"))
    parent.chmod(0o755)
    mount = parent / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(parent)
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        if owner is not None:
            os.chown(mount, owner, owner)
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)
        shutil.rmtree(parent, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Write one file until the filesystem has no block left; return it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):  # down to the last partial block
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def _big_lead(i: int) -> pb.UpsertStateRequest:
    return pb.UpsertStateRequest(
        contact_phone=f"+62812{7000000 + i}", workspace_id="full", request_id=f"big-{i}",
        extracted_data=pb.ExtractedData(goals=_BIG,
                                        pain_points=[f"{i}.{k} {_BIG[:480]}" for k in range(20)]))


def _write_until_refused(stub: sarah_pb2_grpc.SarahServiceStub) -> tuple[int, grpc.RpcError]:
    """Write new big leads until one fails; (how many succeeded, the error)."""
    for i in range(200):
        try:
            stub.UpsertState(_big_lead(i), timeout=10)
        except grpc.RpcError as err:
            return i, err
    raise AssertionError("200 leads of 10 KiB fitted on a full disk")


def assert_full_disk_is_unavailable_then_recovers(server: ServerProcess, disk: Path,
                                                  database_url: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = sarah_pb2_grpc.SarahServiceStub(channel)
        stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, lead_score=10), timeout=10)
        filler = fill(disk)
        written, err = _write_until_refused(stub)
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (err.code(), err.details())
        refusal = err.details()
        assert "Traceback" not in refusal
        # Reads go on, and the refused write left nothing behind.
        assert stub.GetState(pb.GetStateRequest(contact_phone=PHONE), timeout=10).lead_score == 10
        refused = _big_lead(written)
        assert query(database_url, "SELECT count(*) FROM conversation WHERE contact_phone = "
                                   f"'{refused.contact_phone}'") == [(0,)]
        # Space comes back: the same process takes the same write, no restart.
        filler.unlink()
        stored = stub.UpsertState(refused, timeout=10)
        assert stored.extracted_data.goals == _BIG
        assert stub.UpsertState(pb.UpsertStateRequest(contact_phone=PHONE, lead_score=11),
                                timeout=10).lead_score == 11
    assert server.proc.poll() is None, "the server must not have died"
    log = server.stop()
    assert "Traceback" not in log and "INTERNAL" not in log, log[-2000:]
    assert _SAYS_FULL.search(refusal), refusal


def test_full_disk_is_unavailable_and_recovers_sqlite() -> None:
    with small_disk("2m") as disk:
        url = f"sqlite:///{disk / 'sarah.db'}"
        server = ServerProcess("--listen", "127.0.0.1:0", "--database-url", url)
        try:
            assert_full_disk_is_unavailable_then_recovers(server, disk, url)
            assert query(url, "PRAGMA integrity_check") == [("ok",)]
        finally:
            server.stop(signal.SIGKILL)  # at once, if the test has not stopped it


def _postgres_data_owner(url: str) -> int | None:
    """The uid of the PostgreSQL server's data folder, if it is on this machine."""
    with psycopg.connect(url) as conn:
        (data_dir,) = conn.execute("SHOW data_directory").fetchone()
    try:
        return os.stat(data_dir).st_uid
    except OSError:
        return None


def test_full_disk_is_unavailable_and_recovers_postgresql(postgres_server_url: str) -> None:
    assert is_postgres(postgres_server_url)
    owner = _postgres_data_owner(postgres_server_url)
    if owner is None:
        pytest.skip("the PostgreSQL server is not on this machine: cannot fill its disk")
    name = f"sarah_full_{os.getpid()}_{next(_names)}"
    # Its own system catalogs live there too: ~8 MiB, then room for the test's leads.
    with small_disk("24m", owner) as disk, \
            psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE TABLESPACE {name} LOCATION '{disk}'")
        admin.execute(f"CREATE DATABASE {name} TABLESPACE {name}")
        url = urlparse(postgres_server_url)._replace(path=f"/{name}").geturl()
        server = ServerProcess("--listen", "127.0.0.1:0", "--database-url", url)
        try:
            assert_full_disk_is_unavailable_then_recovers(server, disk, url)
        finally:
            server.stop(signal.SIGKILL)  # at once, if the test has not stopped it
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"DROP TABLESPACE IF EXISTS {name}")
