"""The statements of one UpsertState, as the server's own compiled SQL (statements.py), run
with the raw driver (sqlite3 or psycopg) in one thread: the floor of a write's cost.

Two shapes of write. `the bench's UpsertState`: what the server runs for the bench's
request (the same lead each time, no request_id, counts and activity unchanged, so summed
to nothing): look the lead up, update it, advance the log head, insert the event.
`every statement`: a write that needs all of them (issue 25's seven): a new request_id
looked up and saved, the lead's state changed (two count rows) and a message added (its
quarter-hour's activity row), the lead looked up and updated, the head and the event.
On PostgreSQL both take the key's advisory lock first, lock the row (FOR UPDATE) and
notify the log's channel, as the server does.
"""

from collections.abc import Callable
from typing import Any

from server.core.activity import bucket_of
from server.core.domain import Lead
from server.storage.lead_json import lead_to_json
from server.storage.lead_rows import lead_from_tuple, row_values
from server.storage.statements import Statement, Statements
from server.storage.writes import advisory_key

SHAPES = ("the bench's UpsertState", "every statement")
Execute = Callable[[str, Any], Any]


class FloorWrites:
    """One lead's writes, statement by statement, through `execute(sql, params)`."""

    def __init__(self, sql: Statements, execute: Execute, postgres: bool, lead: Lead,
                 lead_id: int):
        self._sql, self._execute, self._pg = sql, execute, postgres
        self._lead, self._id = lead, lead_id
        self._row = row_values(lead)
        self._json = lead_to_json(lead)
        self._advisory = advisory_key(lead.workspace_id, "phone", lead.contact_phone)
        self._state = lead.state  # as stored: the count rows stay exact
        self.statements = 0  # run by the last write

    def _run(self, statement: Statement, values: dict[str, Any]) -> Any:
        self.statements += 1
        return self._execute(statement.sql, [values[name] for name in statement.names])

    def _raw(self, sql: str, params: tuple[Any, ...]) -> Any:
        self.statements += 1
        return self._execute(sql, params)

    def write(self, shape: str, i: int, now: int) -> None:
        """Write number `i` of `shape` at `now` (microseconds), without BEGIN and COMMIT."""
        self.statements = 0
        lead = self._lead
        key = {"workspace_id": lead.workspace_id, "contact_phone": lead.contact_phone}
        full = shape == SHAPES[1]
        if self._pg:
            self._raw("SELECT pg_advisory_xact_lock(%s)", (self._advisory,))
        if full:
            request = {**key, "request_id": f"floor-{i}", "since": now - 86_400_000_000}
            self._run(self._sql.select_request, request)
        found = self._run(self._sql.lock_lead, key).fetchone()
        assert found is not None and found[0] == self._id
        old_state = self._state
        state = "scoring" if old_state != "scoring" else "qualifying"
        row = {**self._row, "id": self._id, "updated_at": now, "last_message_at": now,
               "etag": f"{i:016x}"}
        if full:
            row["state"], row["message_count"] = state, lead.message_count + i + 1
            self._state = state
        self._run(self._sql.update_lead, row)
        if full:
            self._run(self._sql.save_request, {
                **key, "business_scoped_user_id": lead.business_scoped_user_id,
                "request_id": f"floor-{i}", "created_at": now, "result": self._json})
            for bucket_state, n in sorted([(old_state, -1), (state, 1)]):
                self._run(self._sql.add_to_count, {
                    "workspace_id": lead.workspace_id, "lead_temperature": lead.lead_temperature,
                    "state": bucket_state, "n": n, "score_sum": n * lead.lead_score})
            self._run(self._sql.add_activity, {
                "workspace_id": lead.workspace_id, "bucket": bucket_of(now), "new_leads": 0,
                "messages": 1, "reached_handoff": 0, "reached_completed": 0,
                "became_hot": 0})
        head = int(self._run(self._sql.advance_head, {"n": 1}).fetchone()[0])
        self._run(self._sql.insert_event, {
            "revision": head, "workspace_id": lead.workspace_id, "kind": "upserted",
            "contact_phone": lead.contact_phone,
            "business_scoped_user_id": lead.business_scoped_user_id,
            "conversation": self._json, "changed": '["state"]' if full else "[]", "at": now,
            "lead_id": self._id})
        if self._pg:
            self._raw("SELECT pg_notify(%s, %s)", ("sarah_log", str(head)))


def stored_lead(sql: Statements, execute: Execute, workspace_id: str,
                phone: str) -> tuple[Lead, int]:
    """The stored lead of a key and its row id, read with the server's own select."""
    row = execute(sql.select_lead.sql, [{"workspace_id": workspace_id,
                                         "contact_phone": phone}[name]
                                        for name in sql.select_lead.names]).fetchone()
    if row is None:
        raise RuntimeError(f"no lead {phone} in the floor's database")
    return lead_from_tuple(tuple(row)), int(row[0])
