"""Each seeded lead's story: its change-log events and the activity they add, written in
set-based SQL from the conversation rows (a million leads' ten million events in one
INSERT ... SELECT, without a Python loop per row).

Lead i was created at `Timeline.created(i)` (spread evenly over the last `SPAN_DAYS`, so
that retention keeps every event and 30 days of activity hold data) and has
`EVENTS_PER_LEAD` upserts, `Timeline.delta` apart and all before lead i + 1's first, so
revisions follow commit time, as the server's log does: event k of conversation row id
has revision (id - 1) * EVENTS_PER_LEAD + k + 1. The first creates the lead, each later
one adds a message, and the last also takes the lead to its stored state and temperature
(earlier events hold "qualifying" and "warm" where the final one is further on or hot).
The activity rows are what those writes would have added, as server/core/activity.py
counts them: a new lead and its first messages at the creation, a message per later
event, a handoff, completion or hot temperature at the last.
"""

import sqlite3
import time
from dataclasses import dataclass

from server.core.activity import QUARTER_US
from server.storage.statements import LEAD_COLUMNS

EVENTS_PER_LEAD = 10
SPAN_DAYS = 59  # under the default SARAH_HISTORY_DAYS (90): retention removes none
_DAY_US = 86_400_000_000
_LAST = EVENTS_PER_LEAD - 1
_CREATED_CHANGED = ('["contact_phone", "state", "lead_score", "lead_temperature", '
                    '"extracted_data.name", "extracted_data.business_type", '
                    '"extracted_data.team_size", "extracted_data.pain_points", '
                    '"extracted_data.goals", "message_count", "last_message_at"]')
_MESSAGE_CHANGED = '["message_count", "last_message_at"]'
_LAST_CHANGED = ('["state", "lead_score", "lead_temperature", "message_count", '
                 '"last_message_at"]')


@dataclass(frozen=True)
class Timeline:
    """When each of `count` leads was created, and how far apart its events are."""

    start: int  # microseconds since the epoch
    step: int  # between two leads' creations
    delta: int  # between two events of a lead

    @classmethod
    def ending_now(cls, count: int) -> "Timeline":
        span = SPAN_DAYS * _DAY_US
        step = span // count
        # A lead's story takes 80% of its step: the next lead's starts after it.
        return cls(time.time_ns() // 1000 - span, step, max(1, step * 8 // (10 * _LAST)))

    def created(self, i: int) -> int:
        return self.start + i * self.step

    def last(self, i: int) -> int:
        """When lead i's last event was written: its updated_at and last_message_at."""
        return self.created(i) + _LAST * self.delta


# SQL over "c" (a conversation row) and "k" (its event's number, 0 to _LAST).
_AT = '(c."created_at" + k.n * {delta})'
_FINAL = f"k.n = {_LAST}"
_EVENT_VALUES = {
    "state": f"""CASE WHEN {_FINAL} OR c."state" IN ('greeting', 'qualifying')
                 THEN c."state" ELSE 'qualifying' END""",
    "lead_score": f"""CASE WHEN {_FINAL} OR c."lead_temperature" != 'hot'
                      THEN c."lead_score" ELSE 60 END""",
    "lead_temperature": f"""CASE WHEN {_FINAL} OR c."lead_temperature" != 'hot'
                            THEN c."lead_temperature" ELSE 'warm' END""",
    "pain_points": 'json(c."pain_points")',
    "message_count": f'c."message_count" - {_LAST} + k.n',
    "updated_at": _AT,
    "last_message_at": _AT,
}
_NUMBERS = (f"WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k "
            f"WHERE n < {_LAST}) ")


def _column(name: str) -> str:
    return _EVENT_VALUES.get(name, f'c."{name}"')


def _events_sql(delta: int) -> str:
    lead = ", ".join(f"'{name}', {_column(name)}" for name in LEAD_COLUMNS)
    changed = (f"CASE k.n WHEN 0 THEN '{_CREATED_CHANGED}' WHEN {_LAST} THEN '{_LAST_CHANGED}' "
               f"ELSE '{_MESSAGE_CHANGED}' END")
    return (_NUMBERS +
            'INSERT INTO "lead_event" ("revision", "workspace_id", "kind", "contact_phone", '
            '"business_scoped_user_id", "conversation", "changed", "at", "lead_id") '
            f'SELECT (c."id" - 1) * {EVENTS_PER_LEAD} + k.n + 1, c."workspace_id", '
            "'upserted', c.\"contact_phone\", c.\"business_scoped_user_id\", "
            f"json_object({lead}), {changed}, {_AT}, c.\"id\" "
            'FROM "conversation" AS c CROSS JOIN k').format(delta=delta)


def _activity_sql(delta: int) -> str:
    return (_NUMBERS +
            'INSERT INTO "activity" ("workspace_id", "bucket", "new_leads", "messages", '
            '"reached_handoff", "reached_completed", "became_hot") '
            f'SELECT c."workspace_id", {_AT} / {QUARTER_US} AS "b", '
            "SUM(k.n = 0), "
            f'SUM(CASE k.n WHEN 0 THEN c."message_count" - {_LAST} ELSE 1 END), '
            f"SUM({_FINAL} AND c.\"state\" = 'handoff'), "
            f"SUM({_FINAL} AND c.\"state\" = 'completed'), "
            f"SUM({_FINAL} AND c.\"lead_temperature\" = 'hot') "
            'FROM "conversation" AS c CROSS JOIN k GROUP BY c."workspace_id", "b"'
            ).format(delta=delta)


def add_history(con: sqlite3.Connection, timeline: Timeline) -> int:
    """Log every conversation's events and add their activity, in `con`'s transaction,
    on tables that hold none yet; the log's head becomes the last revision. Returns it."""
    con.execute(_events_sql(timeline.delta))
    con.execute(_activity_sql(timeline.delta))
    head = int(con.execute('SELECT COALESCE(MAX("revision"), 0) FROM "lead_event"')
               .fetchone()[0])
    updated = con.execute('UPDATE "log_head" SET "revision" = ? WHERE "id" = 1', (head,))
    if updated.rowcount != 1:
        raise RuntimeError("log_head has no row 1: the server's schema changed")
    return head
