"""Readable tables of responses for a terminal, drawn by rich from the flat rows."""

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from typing import BinaryIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from client.formats import flat, to_json
from client.importing import ImportSummary
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

# What fits on one line of a terminal per lead; `sarah get` and --json show everything.
_LEAD_COLUMNS = ("lead", "workspace_id", "state", "lead_score", "lead_temperature",
                 "name", "business_type", "message_count", "last_message_at")
_PIPE_WIDTH = 250


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
    console.print(table)
    count = len(page.leads)
    summary = f"{count} lead" if count == 1 else f"{count} leads"
    if page.next_page_token:
        summary += f"; more with --page-token {page.next_page_token}"
    console.print(summary, highlight=False)


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
