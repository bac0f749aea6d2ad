"""Crash safety: writers hammer the server through SarahClient while it is killed with
SIGKILL again and again and restarted on the same port; every acknowledged write is there,
intact, and the database passes its integrity check -- on SQLite and on PostgreSQL. After
every kill the change log agrees with the leads: one event per committed write, none for a
write that never committed, revisions gapless, each lead's last event the lead as stored,
every event under its lead's row, and the activity counts summing to the leads stored and
their messages.

`make soak` runs the same test with more kills (SARAH_CRASH_KILLS).
"""

import itertools
import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import psycopg
import pytest

from client import RetryPolicy, SarahClient
from harness.ports import free_port
from harness.processes import ServerProcess
from tests.support.databases import is_postgres, query
from tests.support.threads import BackgroundThreads

KILLS = int(os.environ.get("SARAH_CRASH_KILLS", "4"))
WRITERS = 6
# Up-time between two kills, in seconds: long enough for writers to reconnect and write.
_UP_S = (0.4, 1.6)
# Time the server stays dead before its restart: calls meet a closed port meanwhile.
_DOWN_S = (0.0, 0.5)
# A call's deadline covers a whole restart (gRPC retries UNAVAILABLE inside it).
_CALL_DEADLINE_S = 30.0
_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.3, max_backoff=3.0)
# A writer gives up on one write only after this long: a bound, never reached when healthy.
_WRITE_GIVE_UP_S = 90.0
# The tables PostgreSQL's amcheck verifies.
_TABLES = ("conversation", "upsert_request", "lead_event", "log_head", "activity")
_RESENDABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _phone(writer: int) -> str:
    return f"+62812345{67100 + writer}"


@dataclass
class _Writer:
    """One writer's lead and what was acknowledged for it: every reply is checked."""

    index: int
    acked: int = 0  # message n (0-based) acknowledged means acked == n + 1
    resends: int = 0  # writes sent again (same request_id) after an error
    failures: list[str] = field(default_factory=list)

    @property
    def phone(self) -> str:
        return _phone(self.index)

    def request_id(self, seq: int) -> str:
        return f"crash-w{self.index}-{seq}"

    def goals(self, seq: int) -> str:
        return f"writer {self.index} message {seq}"


class CrashingServer:
    """`python -m server` over one database, killed and restarted on one port."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.port = free_port()
        self.logs: list[str] = []
        self.server = self._start()

    def _start(self) -> ServerProcess:
        return ServerProcess("--listen", f"127.0.0.1:{self.port}",
                             "--database-url", self.database_url)

    def kill(self) -> None:
        self.logs.append(self.server.stop(signal.SIGKILL))

    def restart(self) -> None:
        self.server = self._start()

    def stop(self) -> None:
        self.logs.append(self.server.stop(signal.SIGTERM))


class Hammer(BackgroundThreads):
    """WRITERS threads, each adding messages to its own lead with a unique request_id and
    its sequence number in `team_size`, sending a write again (same request_id, as the
    contract allows) until it is acknowledged."""

    def __init__(self, target: str):
        self.target = target
        self.writers = [_Writer(i) for i in range(WRITERS)]
        super().__init__(WRITERS, join_timeout=_WRITE_GIVE_UP_S + _CALL_DEADLINE_S)

    def run(self, index: int) -> None:
        writer = self.writers[index]
        with SarahClient(self.target, timeout=_CALL_DEADLINE_S, retry=_RETRY) as sarah:
            for seq in itertools.count():
                if self.stopping.is_set() or writer.failures:
                    return
                self._write(sarah, writer, seq)

    def _write(self, sarah: SarahClient, writer: _Writer, seq: int) -> None:
        give_up = time.monotonic() + _WRITE_GIVE_UP_S
        while True:
            try:
                lead = sarah.upsert_state(
                    contact_phone=writer.phone, add_messages=1,
                    request_id=writer.request_id(seq),
                    extracted_data={"team_size": seq, "goals": writer.goals(seq)})
                break
            except grpc.RpcError as err:
                if err.code() not in _RESENDABLE or time.monotonic() > give_up:
                    writer.failures.append(f"message {seq}: {err.code()} {err.details()}")
                    return
                writer.resends += 1
                time.sleep(0.05)
        # Each reply is the lead as this write left it: nothing lost, nothing applied twice.
        if (lead.message_count, lead.extracted_data.team_size) != (seq + 1, seq):
            writer.failures.append(f"message {seq} acknowledged as count "
                                   f"{lead.message_count}, team_size "
                                   f"{lead.extracted_data.team_size}")
            return
        writer.acked = seq + 1


def _stored_rows(url: str, writer: _Writer) -> tuple[tuple, list[tuple[str, str]]]:
    """(message_count, team_size, goals) of the writer's lead, and its request ids with the
    conversation each left, read from the database itself."""
    lead_sql = ("SELECT message_count, team_size, goals FROM conversation "
                "WHERE workspace_id = '' AND contact_phone = '{0}'")
    ids_sql = ("SELECT request_id, result FROM upsert_request "
               "WHERE workspace_id = '' AND contact_phone = '{0}'")
    if is_postgres(url):
        with psycopg.connect(url) as conn:
            lead = conn.execute(lead_sql.format(writer.phone)).fetchone()
            ids = conn.execute(ids_sql.format(writer.phone)).fetchall()
    else:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            lead = conn.execute(lead_sql.format(writer.phone)).fetchone()
            ids = conn.execute(ids_sql.format(writer.phone)).fetchall()
        finally:
            conn.close()
    return lead, ids


def assert_every_acked_write_stored(url: str, writers: list[_Writer]) -> int:
    """Each acknowledged write, one by one, as the database holds it; returns how many."""
    checked = 0
    for writer in writers:
        lead, ids = _stored_rows(url, writer)
        last = writer.acked - 1
        assert lead == (writer.acked, last, writer.goals(last)), (writer.index, lead)
        results = dict(ids)
        # Unacknowledged writes are resent until acknowledged, so there are no others.
        assert set(results) == {writer.request_id(s) for s in range(writer.acked)}
        for seq in range(writer.acked):
            left = json.loads(results[writer.request_id(seq)])
            assert (left["message_count"], left["team_size"], left["goals"]) == (
                seq + 1, seq, writer.goals(seq)), (writer.index, seq, left)
            checked += 1
    return checked


def assert_log_agrees_with_leads(url: str, writers: list[_Writer]) -> int:
    """The change log as a kill left it: revisions 1..head without a gap (nothing is old
    enough for retention), and for each writer's lead one `upserted` event per committed
    write, in order -- message k's event is the lead as request k left it (its etag) and
    the last is the lead as stored, so no event exists for a write that did not commit and
    no committed write lacks one. `acked` is read before the database: the server is dead,
    so the database holds at least what was acknowledged. Returns the head revision."""
    acked = {w.index: w.acked for w in writers}
    head, pruned = query(url, 'SELECT revision, pruned_through FROM log_head')[0]
    revisions = [r for (r,) in query(url, "SELECT revision FROM lead_event ORDER BY revision")]
    assert pruned == 0 and revisions == list(range(1, head + 1)), (head, revisions[-5:])
    events = query(url, "SELECT revision, kind, contact_phone, conversation, lead_id "
                        "FROM lead_event WHERE workspace_id = '' ORDER BY revision")
    # The activity counts, written in the same transactions, agree with the leads: one new
    # lead per lead stored, and every message (writers only add) counted once.
    [(leads, messages)] = query(url, "SELECT COUNT(*), COALESCE(SUM(message_count), 0) "
                                     "FROM conversation")
    [(new_leads, counted)] = query(url, "SELECT COALESCE(SUM(new_leads), 0), "
                                        "COALESCE(SUM(messages), 0) FROM activity")
    assert (int(new_leads), int(counted)) == (leads, int(messages)), (new_leads, counted)
    for writer in writers:
        stored = query(url, "SELECT message_count, team_size, goals, etag, updated_at, id "
                            "FROM conversation WHERE workspace_id = '' AND contact_phone = "
                            f"'{writer.phone}'")
        mine = [(kind, json.loads(text)) for _, kind, phone, text, _ in events
                if phone == writer.phone]
        if not stored:
            assert acked[writer.index] == 0 and not mine, (writer.index, mine)
            continue
        count, team_size, goals, etag, updated_at, row_id = stored[0]
        # Every event of the lead is in its history (ListEvents reads by lead_id).
        assert {lead_id for *_, phone, _, lead_id in events if phone == writer.phone} == {
            row_id}, writer.index
        # The in-flight write may have committed unacknowledged: then it is stored too.
        assert count in (acked[writer.index], acked[writer.index] + 1), (writer.index, count)
        assert [kind for kind, _ in mine] == ["upserted"] * count, (writer.index, mine[-3:])
        assert [lead["message_count"] for _, lead in mine] == list(range(1, count + 1))
        last = mine[-1][1]
        assert (last["team_size"], last["goals"], last["etag"], last["updated_at"]) == (
            team_size, goals, etag, updated_at), (writer.index, last, stored)
        results = dict(_stored_rows(url, writer)[1])
        for seq, (_, lead) in enumerate(mine):
            left = json.loads(results[writer.request_id(seq)])
            assert (lead["etag"], lead["team_size"]) == (left["etag"], seq), (writer.index, seq)
    return head


def assert_database_intact(url: str) -> str:
    """The backend's own integrity check; returns what was checked."""
    if not is_postgres(url):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        return "PRAGMA integrity_check"
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        except psycopg.Error:
            return _compare_index_and_heap_counts(conn)
        indexes = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid IN ('conversation'::regclass, 'upsert_request'::regclass, "
            "'lead_event'::regclass, 'activity'::regclass)"
        ).fetchall()
        assert len(indexes) >= 8, indexes
        for (index,) in indexes:
            # heapallindexed: every table row is found in the index too.
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
        for table in _TABLES:
            corrupt = conn.execute("SELECT * FROM verify_heapam(%s::regclass)",
                                   (table,)).fetchall()
            assert not corrupt, (table, corrupt)
    return (f"amcheck bt_index_check on {len(indexes)} indexes, "
            f"verify_heapam on {len(_TABLES)} tables")


def _compare_index_and_heap_counts(conn: psycopg.Connection) -> str:
    """Without amcheck: the rows a sequential scan finds are the rows the unique index finds."""
    counts = {}
    for scan, settings in (("seq", "enable_indexscan=off, enable_bitmapscan=off, "
                                   "enable_indexonlyscan=off"),
                           ("index", "enable_seqscan=off")):
        for setting in settings.split(", "):
            conn.execute(f"SET {setting.replace('=', ' = ')}")
        counts[scan] = conn.execute(
            "SELECT count(*), sum(message_count) FROM conversation "
            "WHERE (workspace_id, contact_phone) >= ('', '')").fetchone()
        conn.execute("RESET ALL")
    assert counts["seq"] == counts["index"], counts
    return "row counts through a sequential scan and the unique index"


@pytest.fixture
def server(database_url: str) -> Iterator[CrashingServer]:
    running = CrashingServer(database_url)
    yield running
    running.server.stop(signal.SIGKILL)  # at once, if the test has not stopped it


def test_acknowledged_writes_survive_repeated_sigkill(server: CrashingServer,
                                                      database_url: str) -> None:
    seed = int(os.environ.get("SARAH_CRASH_SEED", random.randrange(1 << 30)))
    chaos = random.Random(seed)
    started = time.monotonic()
    heads = []
    with Hammer(server.server.target) as hammer:
        for _ in range(KILLS):
            time.sleep(chaos.uniform(*_UP_S))
            server.kill()
            heads.append(assert_log_agrees_with_leads(database_url, hammer.writers))
            time.sleep(chaos.uniform(*_DOWN_S))
            server.restart()
        time.sleep(chaos.uniform(*_UP_S))
    failures = [f for w in hammer.writers for f in w.failures]
    assert not failures, (seed, failures[:5])
    assert all(w.acked for w in hammer.writers), seed
    # Crash once more right after the last acknowledgement, and read the files as left.
    server.kill()
    checked = assert_every_acked_write_stored(database_url, hammer.writers)
    heads.append(assert_log_agrees_with_leads(database_url, hammer.writers))
    assert heads == sorted(heads), heads
    how = assert_database_intact(database_url)
    # A restarted server serves the same, and a replayed request_id still applies nothing.
    server.restart()
    with SarahClient(server.server.target, timeout=_CALL_DEADLINE_S) as sarah:
        for writer in hammer.writers:
            replay = sarah.upsert_state(contact_phone=writer.phone, add_messages=1,
                                        request_id=writer.request_id(0),
                                        extracted_data={"team_size": 0})
            assert replay.message_count == 1
            lead = sarah.get_state(contact_phone=writer.phone)
            assert lead.message_count == writer.acked
            assert lead.extracted_data.team_size == writer.acked - 1
    server.stop()
    logs = "".join(server.logs)
    assert "Traceback" not in logs and "INTERNAL" not in logs
    print(f"\ncrash test (seed {seed}): {KILLS} SIGKILLs + 1 final, {checked} acknowledged "
          f"writes checked one by one, {sum(w.resends for w in hammer.writers)} resent after "
          f"an error, the change log checked after each kill (heads {heads}), {how}, "
          f"{time.monotonic() - started:.1f} s")
