"""Readable tables of responses for a terminal, drawn by rich from the flat rows."""

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from datetime import date, tzinfo
from typing import BinaryIO

from rich.bar import Bar
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from client.formats import EVENT_COLUMNS, event_row, flat, to_json
from client.importing import ImportSummary
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

# What fits on one line of a terminal per lead; `sarah get` and --json show everything.
_LEAD_COLUMNS = ("lead", "workspace_id", "state", "lead_score", "lead_temperature",
                 "name", "business_type", "message_count", "last_message_at")
_PIPE_WIDTH = 250
# The history table's heads where the contract's field name is long.
_EVENT_HEADS = {"lead_temperature": "temperature", "lead_score": "score"}
# The longest bar of the activity chart, in characters: the busiest day's messages.
_BAR_WIDTH = 30
# GetActivity's counts after messages, as the activity table heads them.
_ACTIVITY_COUNTS = {"new_leads": "new leads", "reached_handoff": "handoff",
                    "reached_completed": "completed", "became_hot": "hot"}


def console() -> Console:
    """Standard output as rich sees it. On a terminal tables fit its width; into a pipe or a
    file they are not cut at rich's default of 80 columns, so no cell loses its end."""
    out = Console()
    return out if out.is_terminal or "COLUMNS" in os.environ else Console(width=_PIPE_WIDTH)


def conversation(console: Console, lead: pb.Conversation) -> None:
    """Every field of one conversation, one row each."""
    table = Table("field", "value", show_header=False)
    for column, value in flat(lead).items():
        # Text, not markup: a lead's name like "[b]" is shown as written.
        table.add_row(column, Text(value))
    console.print(table)


def leads(console: Console, page: pb.ListLeadsResponse) -> None:
    """One page of leads, and how to get the next one."""
    table = Table(*_LEAD_COLUMNS)
    for lead in page.leads:
        # A lead known only by its BSUID has no phone: the BSUID names it instead.
        row = flat(lead) | {"lead": lead.contact_phone or lead.business_scoped_user_id}
        table.add_row(*(Text(row[column]) for column in _LEAD_COLUMNS))
    _page_end(console, table, "lead", len(page.leads), page.next_page_token)


def stats(console: Console, response: pb.GetStatsResponse) -> None:
    """The aggregates, then the count per state."""
    table = Table("", "leads", show_header=False)
    for key in ("total", "hot", "warm", "cold"):
        table.add_row(key, str(getattr(response, key)))
    table.add_row("avg_score", f"{response.avg_score:.1f}")
    for state, count in to_json(response.by_state).items():
        table.add_row(f"state {state}", str(count))
    # Where `sarah watch --since` starts to miss nothing after these counts.
    table.add_row("revision", str(response.revision))
    console.print(table)


def _page_end(console: Console, table: Table, noun: str, count: int, next_token: str) -> None:
    """A page's table, then how many rows it had and how to get the next page."""
    console.print(table)
    summary = _count(noun, count)
    if next_token:
        summary += f"; more with --page-token {next_token}"
    console.print(summary, highlight=False)


def _count(noun: str, count: int) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def history(console: Console, page: pb.ListEventsResponse, zone: tzinfo | None = None) -> None:
    """One page of a lead's events, newest first, times in `zone` (the machine's own when
    None), and how to get the next page."""
    table = Table(*(_EVENT_HEADS.get(key, key) for key in EVENT_COLUMNS))
    for event in page.events:
        row = event_row(event, zone)
        table.add_row(*(Text(row[column]) for column in EVENT_COLUMNS))
    _page_end(console, table, "event", len(page.events), page.next_page_token)


def activity(console: Console, response: pb.GetActivityResponse) -> None:
    """One row per day, oldest first: its messages as a number and a bar scaled to the
    busiest day, the other counts, then the totals."""
    busiest = max((day.messages for day in response.days), default=0)
    table = Table(Column("date", "total"), "", Column("messages", justify="right"), "",
                  *(Column(head, justify="right") for head in _ACTIVITY_COUNTS.values()),
                  title=f"activity per day in {response.time_zone}", show_footer=True)
    for day in response.days:
        table.add_row(day.date, date.fromisoformat(day.date).strftime("%a"), str(day.messages),
                      Bar(max(busiest, 1), 0, day.messages, width=_BAR_WIDTH),
                      *(str(getattr(day, k)) for k in _ACTIVITY_COUNTS))
    table.columns[2].footer = str(sum(day.messages for day in response.days))
    for column, key in zip(table.columns[4:], _ACTIVITY_COUNTS, strict=True):
        column.footer = str(sum(getattr(day, key) for day in response.days))
    console.print(table)


def import_summary(console: Console, summary: ImportSummary) -> None:
    """Counts per outcome, then each rejected line with its reason."""
    table = Table("outcome", "conversations")
    for outcome in ("imported", "merged", "unchanged"):
        table.add_row(outcome, str(getattr(summary, outcome)))
    table.add_row("rejected", str(len(summary.rejected)))
    console.print(table)
    for line, reason in sorted(summary.rejected):
        console.print(f"line {line}: {reason}", highlight=False, markup=False)



def _size(file: BinaryIO) -> int | None:
    """The size of a regular file; None for a pipe or a terminal, which have none."""
    try:
        info = os.fstat(file.fileno())
    except (OSError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@contextlib.contextmanager
def progress(file: BinaryIO) -> Iterator[Callable[[int], None]]:
    """A callback taking the bytes read so far, drawn as a bar on a terminal's stderr only,
    so that a script or a redirected run gets nothing but the summary."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda done: None
        return
    columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("importing", total=_size(file))
        yield lambda done: bar.update(task, completed=done)
