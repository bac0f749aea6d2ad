"""The `sarah` command line: one subcommand per RPC, plus export and import.

Tables for people by default, the contract's exact JSON with --json. A failed call ends
with the server's message on stderr and exit status 1, never a traceback.
"""

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click
import grpc
from google.protobuf.message import Message
from rich.console import Console

from client import render
from client.channels import PlaintextTokenRefused
from client.errors import describe
from client.formats import event_line, to_json, write_csv, write_jsonl
from client.identity import BSUID_KEY, CLEAR_PATHS, lead_key
from client.importing import MAX_BATCH, ImportSummary, import_lines
from client.interrupts import run_until_interrupted
from client.options import DEFAULT_TARGET, DEFAULT_TIMEOUT
from client.requests import DEFAULT_DAYS, DEFAULT_TIME_ZONE
from client.sync import SarahClient
from client.watching import RevisionTooOld, WatchGaveUp
from sarah import VERSION
from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

_Command = Callable[..., Any]
_MAX_PAGE = 500
# The enum words, from the generated enums: the same words as the contract's JSON.
_STATES = click.Choice(pb.State.keys())
_TEMPERATURES = click.Choice(pb.Temperature.keys())
_LANGUAGES = click.Choice(pb.Language.keys())
# Exit status of an import that finished but skipped lines, apart from 1 (a failed call).
EXIT_REJECTED = 3


def _int32(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Stop numbers that no int32 field can hold with a usage error; the server checks the
    contract's own limits and names the field."""
    if value is not None and not -(2**31) <= value < 2**31:
        raise click.BadParameter(f"{value} does not fit in a 32-bit integer")
    return value


class _Group(click.Group):
    """Ends any failed call with its description and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except grpc.RpcError as err:
            raise click.ClickException(describe(err) + _tls_hint(err)) from None
        except PlaintextTokenRefused as err:
            raise click.UsageError(str(err)) from None


def _tls_hint(err: grpc.RpcError) -> str:
    """What to do about a failed TLS handshake; grpc's own words name only OpenSSL's error."""
    if isinstance(err, grpc.Call) and "handshake" in (err.details() or "").lower():
        return ("\n  the TLS handshake failed: pass --ca-file with the CA that signed the "
                "server's certificate (env SARAH_CA_FILE), and check that the target speaks TLS")
    return ""


def _credentials(tls: bool, ca_file: str | None) -> grpc.ChannelCredentials | None:
    """TLS when asked for, or when a CA is given; the system's trusted CAs without one."""
    if not tls and ca_file is None:
        return None
    roots = Path(ca_file).read_bytes() if ca_file else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def _connected(command: _Command) -> _Command:
    """Add the connection options and pass the command a connected client."""

    @click.option("--target", envvar="SARAH_TARGET", default=DEFAULT_TARGET, show_default=True,
                  help="host:port of the gRPC server (env SARAH_TARGET)")
    @click.option("--token", envvar="SARAH_TOKEN", default=None,
                  help="bearer token sent with every call (env SARAH_TOKEN); only over TLS "
                       "unless the target is loopback")
    @click.option("--timeout", envvar="SARAH_TIMEOUT", type=click.FloatRange(0, min_open=True),
                  default=DEFAULT_TIMEOUT, show_default=True,
                  help="seconds each call may take, retries included (env SARAH_TIMEOUT)")
    @click.option("--tls", is_flag=True, envvar="SARAH_TLS",
                  help="connect over TLS, trusting the system's CAs (env SARAH_TLS=1)")
    @click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), envvar="SARAH_CA_FILE",
                  default=None, help="PEM file of the CA to trust instead; implies --tls "
                                     "(env SARAH_CA_FILE)")
    @click.option("--allow-plaintext-token", is_flag=True, envvar="SARAH_ALLOW_PLAINTEXT_TOKEN",
                  help="send --token without TLS to a host beyond loopback (a trusted network "
                       "only)")
    @functools.wraps(command)
    def with_client(target: str, token: str | None, timeout: float, tls: bool,
                    ca_file: str | None, allow_plaintext_token: bool, **options: Any) -> Any:
        with SarahClient(target, token=token, timeout=timeout,
                         credentials=_credentials(tls, ca_file),
                         allow_plaintext_token=allow_plaintext_token) as client:
            return command(client, **options)

    return with_client


_as_json = click.option("--json", "as_json", is_flag=True,
                        help="print the contract's JSON instead of a table")
_lead_workspace = click.option("--workspace", default="",
                               help="the lead's workspace; the default workspace if omitted")


def _filters(command: _Command) -> _Command:
    """The ListLeads filters, shared by `leads` and `export`."""
    for option in reversed([
        click.option("--workspace", default=None, help="only this workspace (default: all)"),
        click.option("--temperature", type=_TEMPERATURES, help="only this temperature"),
        click.option("--state", type=_STATES, help="only this state"),
        click.option("--min-score", type=int, callback=_int32,
                     help="only leads scoring at least this"),
    ]):
        command = option(command)
    return command


def _list_request(workspace: str | None, temperature: str | None, state: str | None,
                  min_score: int | None, **paging: Any) -> pb.ListLeadsRequest:
    filters: dict[str, Any] = {"workspace_id": workspace, "temperature": temperature,
                               "state": state, "min_score": min_score}
    return pb.ListLeadsRequest(**{k: v for k, v in filters.items() if v is not None}, **paging)


def _emit(as_json: bool, message: Message, table: Callable[[Console, Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(to_json(message), indent=2, ensure_ascii=False))
    else:
        table(render.console(), message)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, "--version", prog_name="sarah", message="%(prog)s %(version)s")
def cli() -> None:
    """Read and write Sarah's lead conversations over gRPC."""


_LEAD_HELP = ("LEAD is a phone number in any spelling (0812-3456-7890, 6281...) or a "
              "WhatsApp BSUID (ID.1648738043044942).")
_bsuid = click.option("--bsuid", default=None,
                      help="the lead's BSUID as well, when LEAD is its phone number")


def _lead_keys(lead: str | None, bsuid: str | None) -> dict[str, Any]:
    """The key fields of a request naming LEAD (a phone number or a BSUID) and --bsuid.

    With neither, no key is sent and the server names both fields as required."""
    keys = lead_key(lead) if lead else {}
    if bsuid is not None:
        if keys.get(BSUID_KEY, bsuid) != bsuid:
            raise click.UsageError(f"LEAD is the BSUID {lead}, and --bsuid says {bsuid}")
        keys[BSUID_KEY] = bsuid
    return keys


@cli.command(epilog=_LEAD_HELP)
@_connected
@click.argument("lead")
@_bsuid
@_lead_workspace
@_as_json
def get(client: SarahClient, lead: str, bsuid: str | None, workspace: str,
        as_json: bool) -> None:
    """Show the conversation of LEAD (the default one for an unknown lead)."""
    found = client.get_state(**_lead_keys(lead, bsuid), workspace_id=workspace)
    _emit(as_json, found, render.conversation)


@cli.command(epilog=_LEAD_HELP + " Give LEAD, --bsuid or both.")
@_connected
@click.argument("lead", required=False)
@_bsuid
@_lead_workspace
@click.option("--state", type=_STATES)
@click.option("--score", type=int, callback=_int32, help="lead_score, 0 to 100")
@click.option("--temperature", type=_TEMPERATURES)
@click.option("--name")
@click.option("--business-type")
@click.option("--team-size", type=int, callback=_int32)
@click.option("--goals")
@click.option("--pain-point", "pain_points", multiple=True,
              help="repeat for each; replaces the stored list")
@click.option("--language", type=_LANGUAGES)
@click.option("--message-count", type=int, callback=_int32, help="set message_count")
@click.option("--add-messages", type=int, callback=_int32, help="add 1-1000 to message_count")
@click.option("--username", help="the lead's WhatsApp username (display only)")
@click.option("--parent-bsuid", "parent_business_scoped_user_id",
              help="the parent BSUID of linked business portfolios")
@click.option("--clear", "clear", multiple=True, type=click.Choice(CLEAR_PATHS), metavar="PATH",
              help="reset PATH to its default, repeat for each: " + ", ".join(CLEAR_PATHS))
@click.option("--etag", help="write only if the stored etag is this")
@click.option("--request-id", default="", help="idempotency key: a retry applies nothing twice")
@_as_json
def upsert(client: SarahClient, lead: str | None, bsuid: str | None, workspace: str,
           score: int | None, temperature: str | None, pain_points: tuple[str, ...],
           request_id: str, as_json: bool, **fields: Any) -> None:
    """Create or update the conversation of LEAD; only the options given change."""
    slots = {k: fields.pop(k) for k in ("name", "business_type", "team_size", "goals")}
    fields |= {"lead_score": score, "lead_temperature": temperature}
    request = pb.UpsertStateRequest(
        **_lead_keys(lead, bsuid), workspace_id=workspace, request_id=request_id,
        extracted_data=pb.ExtractedData(
            pain_points=pain_points, **{k: v for k, v in slots.items() if v is not None}),
        **{k: v for k, v in fields.items() if v is not None},
    )
    _emit(as_json, client.upsert_state(request), render.conversation)


@cli.command("move-identity", epilog="OLD and NEW are each a phone number or a BSUID. " \
             "If OLD finds no lead but NEW does, the move already happened and nothing " \
             "changes; if neither does, it fails with NOT_FOUND.")
@_connected
@click.argument("old")
@click.argument("new")
@_lead_workspace
@click.option("--request-id", default="", help="idempotency key: a retry applies nothing twice")
@_as_json
def move_identity(client: SarahClient, old: str, new: str, workspace: str, request_id: str,
                  as_json: bool) -> None:
    """Move the lead OLD to its new key NEW: WhatsApp's user_changed_number (a new phone
    number) or user_changed_user_id (a new BSUID). A lead already holding NEW merges in."""
    moved = client.change_identity(
        **lead_key(old), **{f"new_{k}": v for k, v in lead_key(new).items()},
        workspace_id=workspace, request_id=request_id)
    _emit(as_json, moved, render.conversation)


@cli.command()
@_connected
@_filters
@click.option("--order-by", default="",
              help='"lead_score desc" (default), "last_message_at desc", "created_at desc" '
                   'or "updated_at desc"')
@click.option("--page-size", type=int, callback=_int32, default=0,
              help="leads per page (server default 50)")
@click.option("--page-token", default="", help="the token the previous page printed")
@_as_json
def leads(client: SarahClient, as_json: bool, **options: Any) -> None:
    """List one page of leads, hottest first; `export` writes all of them."""
    _emit(as_json, client.list_leads(_list_request(**options)), render.leads)


@cli.command()
@_connected
@click.option("--workspace", default=None, help="only this workspace (default: all)")
@_as_json
def stats(client: SarahClient, workspace: str | None, as_json: bool) -> None:
    """Count leads by temperature and state."""
    request = pb.GetStatsRequest() if workspace is None else pb.GetStatsRequest(
        workspace_id=workspace)
    _emit(as_json, client.get_stats(request), render.stats)


@cli.command(epilog=_LEAD_HELP)
@_connected
@click.argument("lead")
@_bsuid
@_lead_workspace
@_as_json
def delete(client: SarahClient, lead: str, bsuid: str | None, workspace: str,
           as_json: bool) -> None:
    """Erase the whole lead LEAD, whichever key finds it (the right to erasure); unknown
    leads succeed too."""
    response = client.delete_state(**_lead_keys(lead, bsuid), workspace_id=workspace)
    if as_json:
        click.echo(json.dumps(to_json(response)))
    elif response.deleted:
        click.echo(f"deleted the conversation of {lead}")
    else:
        click.echo(f"nothing to delete: no stored conversation of {lead}")


@cli.command(epilog=_LEAD_HELP)
@_connected
@click.argument("lead")
@_bsuid
@_lead_workspace
@click.option("--page-size", type=int, callback=_int32, default=0,
              help="events per page (server default 50, at most 500)")
@click.option("--page-token", default="", help="the token the previous page printed")
@_as_json
def history(client: SarahClient, lead: str, bsuid: str | None, workspace: str,
            page_size: int, page_token: str, as_json: bool) -> None:
    """Show one page of what happened to LEAD, newest first: each change with the fields it
    changed and the lead after it, also from before an identity change or a merge. Times
    are in this machine's time zone (TZ)."""
    page = client.list_events(**_lead_keys(lead, bsuid), workspace_id=workspace,
                              page_size=page_size, page_token=page_token)
    _emit(as_json, page, render.history)


def _days(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """Stop --days 0 with a usage error: proto3 cannot tell 0 from unset, so the server
    would answer its default of 30 days instead of refusing. It checks every other value
    and names the field."""
    if value == 0:
        raise click.BadParameter("give 1 to 366 days")
    _int32(ctx, param, value)
    return value


@cli.command()
@_connected
@click.option("--time-zone", default=DEFAULT_TIME_ZONE, show_default=True,
              help="IANA name of the zone whose calendar days are counted: Asia/Jakarta (WIB), "
                   "Asia/Makassar (WITA), Asia/Jayapura (WIT), ...")
@click.option("--days", type=int, callback=_days, default=DEFAULT_DAYS, show_default=True,
              help="how many days, ending today: 1 to 366")
@click.option("--workspace", default=None, help="only this workspace (default: all)")
@_as_json
def activity(client: SarahClient, time_zone: str, days: int, workspace: str | None,
             as_json: bool) -> None:
    """Chart what happened per local calendar day, oldest first, ending today: new leads,
    messages (a bar each day), handoffs, completions and leads that became hot."""
    response = client.get_activity(workspace_id=workspace, time_zone=time_zone, days=days)
    _emit(as_json, response, render.activity)


@cli.command()
@_connected
@_filters
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="JSON Lines in the contract's words, or CSV")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8", lazy=True), default="-",
              help="file to write (default: standard output)")
def export(client: SarahClient, fmt: str, output: TextIO, **filters: Any) -> None:
    """Write every matching lead, a page at a time, so memory stays constant."""
    # created_at never changes on an update, so a lead written during the export keeps its
    # place in this order: none is skipped or written twice.
    request = _list_request(**filters, order_by="created_at desc", page_size=_MAX_PAGE)
    write = write_csv if fmt == "csv" else write_jsonl
    count = write(client.iter_leads(request), output)
    click.echo(f"exported {count} leads", err=True)


@cli.command("import")
@_connected
@click.argument("file", type=click.File("rb"))
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=MAX_BATCH,
              show_default=True, help="conversations per ImportConversations call")
@_as_json
def import_(client: SarahClient, file: BinaryIO, batch_size: int, as_json: bool) -> None:
    """Load the earlier backend's export FILE (JSON Lines; - for stdin), keeping timestamps.

    Running it again changes nothing. Exit status 3 when lines were rejected.
    """
    summary = ImportSummary()
    try:
        with render.progress(file) as advance:
            import_lines(client, file, summary, batch_size, advance)
    finally:
        # Also after a failed call: what the earlier batches did is still true.
        if as_json:
            click.echo(json.dumps(summary.as_json(), ensure_ascii=False))
        else:
            render.import_summary(render.console(), summary)
    if summary.rejected:
        raise click.exceptions.Exit(EXIT_REJECTED)


@cli.command(epilog="Each line: revision, kind, the lead's key, workspace=, then state=, "
             "temperature=, score= and changed= (the field paths the write changed). "
             "Ctrl-C stops.")
@_connected
@click.option("--workspace", default=None, help="only this workspace (default: all)")
@click.option("--since", type=click.IntRange(0, 2**63 - 1), default=None,
              help="start after this revision (from a list's or stats' revision); "
                   "default: from now on")
@click.option("--heartbeats", is_flag=True, help="print heartbeats too")
@_as_json
def watch(client: SarahClient, workspace: str | None, since: int | None, heartbeats: bool,
          as_json: bool) -> None:
    """Print every change to the leads as it commits, one line each; a dropped connection
    or a server restart is resumed where it stopped."""

    def print_events() -> None:
        for event in client.watch(workspace, since, heartbeats=heartbeats):
            line = json.dumps(to_json(event), ensure_ascii=False) if as_json else event_line(
                event)
            # click.echo flushes: a pipe reading this sees each change as it happens.
            click.echo(line)

    try:
        # Ctrl-C is how a watch ends: it closes the channel, which ends the stream.
        run_until_interrupted(print_events, stop=client.close)
    except (RevisionTooOld, WatchGaveUp) as err:
        raise click.ClickException(str(err)) from None


def main() -> None:
    """The `sarah` console script."""
    cli(prog_name="sarah")
