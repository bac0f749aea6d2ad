"""Activity: what a write adds to the counts of its quarter-hour, and the counts per local
calendar day in any time zone, as plain functions (no storage, no transport).

Counts are kept per workspace and UTC quarter-hour. Every IANA zone's offset today is a
whole number of quarter-hours (Asia/Kolkata +5:30, Asia/Kathmandu +5:45, Pacific/Chatham
+12:45), so a local day, whatever its length on a DST switch, is a whole set of
quarter-hours: summing them per day is exact, where per UTC day or hour it would not be.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

from server.core.domain import Lead

QUARTER_US = 900 * 1_000_000
_COUNTS = ("new_leads", "messages", "reached_handoff", "reached_completed", "became_hot")


class ActivityChange(NamedTuple):
    """What one write adds to one workspace's quarter-hour."""

    workspace_id: str
    bucket: int
    new_leads: int
    messages: int
    reached_handoff: int
    reached_completed: int
    became_hot: int


class ActivityRow(NamedTuple):
    """One quarter-hour's counts (of one workspace, or summed over several): what storage
    reads."""

    bucket: int
    new_leads: int
    messages: int
    reached_handoff: int
    reached_completed: int
    became_hot: int


@dataclass(frozen=True)
class ActivityDay:
    """What happened on one local calendar day."""

    date: dt.date
    new_leads: int = 0
    messages: int = 0
    reached_handoff: int = 0
    reached_completed: int = 0
    became_hot: int = 0


def bucket_of(at_us: int) -> int:
    """The quarter-hour a moment (microseconds since the epoch, UTC) falls in."""
    return at_us // QUARTER_US


def _entered(before: Lead | None, after: Lead, field: str, value: str) -> int:
    return int(getattr(after, field) == value
               and (before is None or getattr(before, field) != value))


def counts_of(before: Lead | None, after: Lead) -> tuple[int, int, int, int, int]:
    """What turning `before` (None: no lead yet) into `after` counts, in _COUNTS order: a
    new lead; the growth of message_count (a create counts its initial count, a decrease
    counts 0); entering handoff, completed, hot."""
    grown = after.message_count - (before.message_count if before is not None else 0)
    return (int(before is None), max(0, grown), _entered(before, after, "state", "handoff"),
            _entered(before, after, "state", "completed"),
            _entered(before, after, "lead_temperature", "hot"))


class ActivityDeltas:
    """What one transaction adds to the activity counts, applied together at its end."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], Counter[str]] = {}

    def _add(self, workspace_id: str, at_us: int, counts: Iterable[int]) -> None:
        slot = self._counts.setdefault((workspace_id, bucket_of(at_us)), Counter())
        for name, n in zip(_COUNTS, counts, strict=True):
            slot[name] += n

    def change(self, before: Lead | None, after: Lead, at_us: int) -> None:
        """Count `before` becoming `after` at `at_us`. A merge's base is the two halves
        already summed, so passing it as `before` counts no new lead and no messages."""
        self._add(after.workspace_id, at_us, counts_of(before, after))

    def imported(self, lead: Lead, at_us: int) -> None:
        """Count a lead imported with its own history: created (with its messages) at its
        created_at, and its state and temperature reached at its updated_at, as the
        migration counted the leads stored before activity existed."""
        new_leads, messages, handoff, completed, hot = counts_of(None, lead)
        self._add(lead.workspace_id, lead.created_at or at_us, (new_leads, messages, 0, 0, 0))
        self._add(lead.workspace_id, lead.updated_at or at_us, (0, 0, handoff, completed, hot))

    def changes(self) -> Iterator[ActivityChange]:
        """Each quarter-hour that changed, in sorted order: two transactions touching the
        same rows then lock them in one order (no deadlock on PostgreSQL)."""
        for (workspace_id, bucket), counts in sorted(self._counts.items()):
            if any(counts.values()):
                yield ActivityChange(workspace_id, bucket, *(counts[n] for n in _COUNTS))


def local_days(zone: ZoneInfo, today_us: int, days: int) -> list[tuple[dt.date, int]]:
    """The `days` calendar days in `zone` ending with the one holding `today_us`, oldest
    first, each with its first quarter-hour; then the day after, whose first quarter-hour
    ends the range. Midnight is found by zoneinfo for each day, so a day of 23 or 25
    hours (a DST switch) is as long as it is."""
    today = dt.datetime.fromtimestamp(today_us / 1_000_000, zone).date()
    first = today - dt.timedelta(days=days - 1)
    dates = [first + dt.timedelta(days=i) for i in range(days + 1)]
    return [(date, bucket_of(int(dt.datetime.combine(date, dt.time(), zone).timestamp())
                             * 1_000_000)) for date in dates]


def per_day(bounds: list[tuple[dt.date, int]], rows: Iterable[ActivityRow]) -> list[ActivityDay]:
    """Sum rows into the days of `bounds` (from local_days): quarter-hours, or the
    per-day sums storage makes, each row at its day's first quarter-hour."""
    starts = [start for _, start in bounds]
    totals = [Counter[str]() for _ in bounds[:-1]]
    for row in rows:
        day = bisect.bisect_right(starts, row.bucket) - 1
        if 0 <= day < len(totals):
            for name in _COUNTS:
                totals[day][name] += int(getattr(row, name))  # PostgreSQL: maybe a Decimal
    return [ActivityDay(date, **{n: total[n] for n in _COUNTS})
            for (date, _), total in zip(bounds, totals, strict=False)]
