"""Databases of N leads, fast: the server makes its own schema, sqlite3 bulk-inserts rows."""

import json
import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from bench.history_seed import EVENTS_PER_LEAD, Timeline, add_history
from bench.procs import real_server
from sarah.v1 import sarah_pb2 as pb
from sarah.v1 import sarah_pb2_grpc
from server.storage.database import open_database
from server.storage.repository import Repository

_LOGGER = logging.getLogger(__name__)

TABLE = "conversation"
_STATES = ("greeting", "qualifying", "scoring", "handoff", "completed")
_BUSINESSES = ("restaurant", "salon", "laundry", "bakery", "workshop", "clinic")
# Lead i is in WORKSPACES[i % 4]: lead 0, which the main table reads and writes, in the
# default one; GetActivity is measured over every workspace and over one.
WORKSPACES = ("", "toko-1", "toko-2", "toko-3")


def phone(i: int) -> str:
    """The i-th seeded lead's number: valid Indonesian mobile numbers, E.164."""
    return f"+62812{i:08d}"


def _temperature(score: int) -> str:
    return "hot" if score >= 70 else "warm" if score >= 40 else "cold"


def workspace(i: int) -> str:
    """The i-th seeded lead's workspace."""
    return WORKSPACES[i % len(WORKSPACES)]


def _values(i: int, rng: random.Random, timeline: Timeline) -> dict[str, object]:
    """Every column the server's conversation table had when this was written; the
    timestamps and message count are those history_seed.py's events leave."""
    score = rng.randrange(101)
    created, updated = timeline.created(i), timeline.last(i)
    return {
        "workspace_id": workspace(i), "contact_phone": phone(i),
        "state": _STATES[i % len(_STATES)],
        "lead_score": score, "lead_temperature": _temperature(score),
        "name": f"Lead {i}", "business_type": _BUSINESSES[i % len(_BUSINESSES)],
        "team_size": rng.randrange(1, 50), "pain_points": json.dumps(["slow replies"]),
        "goals": "more weekend bookings", "language": "id" if i % 4 else "en",
        "message_count": rng.randrange(EVENTS_PER_LEAD, 40), "created_at": created,
        "updated_at": updated, "last_message_at": updated, "etag": f"{i:016x}",
    }


def _columns(con: sqlite3.Connection) -> list[str]:
    """The columns to fill; a required column this module does not know is an error."""
    known = _values(0, random.Random(0), Timeline.ending_now(1))
    columns = []
    for _, name, _, not_null, default, pk in con.execute(f"PRAGMA table_info({TABLE})"):
        if pk:
            continue
        if name in known:
            columns.append(name)
        elif not_null and default is None:
            raise RuntimeError(f"bench/seed.py cannot fill the new required column "
                               f"{TABLE}.{name}: teach _values() about it")
    return columns


def _rows(count: int, columns: list[str], timeline: Timeline
          ) -> Iterator[tuple[object, ...]]:
    rng = random.Random(count)
    for i in range(count):
        values = _values(i, rng, timeline)
        yield tuple(values[c] for c in columns)


def _rebuild_derived(db: Path) -> None:
    """What the server derives from the conversations, rebuilt by the server's own code:
    the lead counts GetStats reads, as `sarah-server copy-data` does after its bulk copy.
    run.py checks GetStats' total against the seeded count, so a derived table added later
    and missed here stops the bench instead of skewing it."""
    database = open_database(f"sqlite:///{db}", pool_size=1)
    try:
        Repository(database).rebuild_counts()
    finally:
        database.close_all()


def make_schema(db: Path, workdir: Path, server_args: list[str]) -> None:
    """Start the real server on a new file, as an operator would, call it once, stop it."""
    server = real_server(db, workdir, server_args, name=f"schema-{db.stem}")
    try:
        with grpc.insecure_channel(server.target) as channel:
            sarah_pb2_grpc.SarahServiceStub(channel).GetStats(pb.GetStatsRequest(), timeout=30)
    finally:
        server.stop()


def seed(db: Path, count: int, workdir: Path, server_args: list[str],
         history: bool = True) -> float:
    """Create `db` with `count` leads (lead i has phone(i), in workspace(i)) and, with
    `history`, their events and activity (history_seed.py); return the seconds it took.

    Indexes are dropped during the insert and rebuilt after (a sort beats a million
    B-tree insertions); triggers, if the schema ever has any, stay and fire; tables the
    server derives from conversations are rebuilt after.
    """
    start = time.monotonic()
    make_schema(db, workdir, server_args)
    timeline = Timeline.ending_now(count)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        columns = _columns(con)
        tables = (TABLE, "lead_event") if history else (TABLE,)
        indexes = con.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN ({', '.join('?' * len(tables))})", tables).fetchall()
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA cache_size = -262144")  # 256 MiB for the index sorts
        con.execute("BEGIN")
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        marks = ", ".join("?" * len(columns))
        con.executemany(f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES ({marks})",
                        _rows(count, columns, timeline))
        leads_done = time.monotonic()
        events = add_history(con, timeline) if history else 0
        for _, sql in indexes:
            con.execute(sql)
        con.execute("COMMIT")
        con.execute("PRAGMA journal_mode = WAL")
    finally:
        con.close()
    _rebuild_derived(db)
    elapsed = time.monotonic() - start
    _LOGGER.info("seeded %s with %d leads and %d events in %.1f s (%.1f s after the leads' "
                 "insert)", db.name, count, events, elapsed, time.monotonic() - leads_done)
    return elapsed
