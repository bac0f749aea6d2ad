"""The peer: what a Python developer would build instead of SarahService (issues 14, 25).

    python -m bench.peer_app --listen 127.0.0.1:PORT --database FILE [--shape def|async]

FastAPI on uvicorn (one process, uvicorn's defaults: uvloop and httptools where installed,
as `pip install "fastapi[standard]"` gives), `sqlite3` in WAL mode with synchronous=NORMAL,
`GET` and `POST /sarah/state` as the contract's JSON. Written the way the tutorials write
it, on purpose: no validation, no merge of `extracted_data`, no change log, no activity
counts, one `INSERT ... ON CONFLICT DO UPDATE` per POST, the row back as JSON. It is
the bench's yardstick, not a design to copy. The one liberty taken is in the peer's
favour: no access log line per request (ours logs each call).

Two shapes, the bench counting the faster: `def` endpoints, which FastAPI runs on its
thread pool (a connection per thread), and `async def` endpoints, the form FastAPI's
documentation shows first, which run on the event loop itself with one connection (the
statement blocks the loop for its few microseconds: no thread hand-off at all).
"""

import argparse
import json
import sqlite3
import sys
import threading
import time
from typing import Any

import uvicorn
from fastapi import Body, FastAPI, HTTPException

SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    contact_phone TEXT PRIMARY KEY,
    state TEXT,
    lead_score INTEGER,
    lead_temperature TEXT,
    extracted_data TEXT,
    language TEXT,
    message_count INTEGER,
    updated_at REAL
)"""
COLUMNS = ("contact_phone", "state", "lead_score", "lead_temperature", "extracted_data",
           "language", "message_count", "updated_at")
SHAPES = ("def", "async")
UPSERT = (f"INSERT INTO state ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
          "ON CONFLICT(contact_phone) DO UPDATE SET "
          + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:]) + " RETURNING *")


def connect(path: str) -> sqlite3.Connection:
    """Autocommit (each statement its own transaction), WAL, synchronous=NORMAL."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    return conn


def row_values(body: dict[str, Any]) -> tuple[object, ...]:
    """A POST body as the table's row (also how the bench seeds the peer's leads)."""
    return (body.get("contact_phone"), body.get("state"), body.get("lead_score"),
            body.get("lead_temperature"), json.dumps(body.get("extracted_data") or {}),
            body.get("language"), body.get("message_count"), time.time())


def seed(path: str, bodies: list[dict[str, Any]]) -> None:
    """The peer's table holding these leads, written as its POST writes them."""
    conn = connect(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(UPSERT.removesuffix(" RETURNING *"), map(row_values, bodies))
        conn.execute("COMMIT")
    finally:
        conn.close()


def create_app(path: str, shape: str = "def") -> FastAPI:
    """The app with `def` endpoints (FastAPI's thread pool) or `async def` ones (the
    event loop); the same statements either way."""
    app = FastAPI()
    # `def` endpoints run on a thread pool: one connection per thread. `async def` ones all
    # run on the one event loop thread: one connection.
    local = threading.local()

    def db() -> sqlite3.Connection:
        if not hasattr(local, "conn"):
            local.conn = connect(path)
        conn: sqlite3.Connection = local.conn
        return conn

    def as_json(row: tuple[Any, ...]) -> dict[str, Any]:
        found = dict(zip(COLUMNS, row, strict=True))
        found["extracted_data"] = json.loads(found["extracted_data"] or "{}")
        return found

    def get_state(contact_phone: str) -> dict[str, Any]:
        row = db().execute("SELECT * FROM state WHERE contact_phone = ?",
                           (contact_phone,)).fetchone()
        if row is None:
            raise HTTPException(status_code=404, detail="not found")
        return as_json(row)

    def post_state(body: dict[str, Any]) -> dict[str, Any]:
        return as_json(db().execute(UPSERT, row_values(body)).fetchone())

    if shape == "async":
        @app.get("/sarah/state")
        async def get_state_async(contact_phone: str) -> dict[str, Any]:
            return get_state(contact_phone)

        @app.post("/sarah/state")
        async def post_state_async(body: dict[str, Any] = Body(...)  # noqa: B008
                                   ) -> dict[str, Any]:
            return post_state(body)
    else:
        @app.get("/sarah/state")
        def get_state_def(contact_phone: str) -> dict[str, Any]:
            return get_state(contact_phone)

        @app.post("/sarah/state")
        def post_state_def(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
            return post_state(body)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.peer_app", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--database", required=True, help="SQLite file (made if missing)")
    parser.add_argument("--shape", choices=SHAPES, default="def",
                        help="`def` endpoints (FastAPI's thread pool) or `async def` ones "
                             "(the event loop); default def")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    connect(args.database).close()  # the schema, before the first request
    uvicorn.run(create_app(args.database, args.shape), host=host, port=int(port), access_log=False,
                log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
