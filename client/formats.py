"""The contract's JSON for messages, and the flat rows of tables and CSV built from it."""

import csv
import json
import logging
from collections.abc import Iterable
from datetime import UTC, tzinfo
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from sarah.v1 import sarah_pb2 as pb

_LOGGER = logging.getLogger(__name__)

_SLOTS = ("name", "business_type", "team_size", "pain_points", "goals")
# One column per field of the conversation, extracted_data's slots spread out. The v1.1
# identity fields come last, so a reader of v1's columns by position still finds them.
COLUMNS = (
    "contact_phone", "workspace_id", "state", "lead_score", "lead_temperature", *_SLOTS,
    "language", "message_count", "created_at", "updated_at", "last_message_at", "etag",
    "business_scoped_user_id", "parent_business_scoped_user_id", "username",
)


def _in_field_order(message: Message, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with its keys in the proto's field order, as the HTTP side prints them
    (MessageToDict puts the fields left at their default last)."""
    ordered: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.name not in doc:
            continue
        value = doc[field.name]
        nested = field.message_type
        if nested is not None and nested.full_name != "google.protobuf.Timestamp":
            inner = getattr(message, field.name)
            value = ([_in_field_order(m, d) for m, d in zip(inner, value, strict=True)]
                     if isinstance(value, list) else _in_field_order(inner, value))
        ordered[field.name] = value
    return ordered


def to_json(message: Message) -> dict[str, Any]:
    """`message` in the contract's JSON: snake_case keys, enum words, RFC 3339 timestamps,
    numbers as numbers, and primitive fields printed even when zero."""
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _in_field_order(message, doc)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        # A JSON array keeps pain points that contain commas apart.
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def flat(conversation: pb.Conversation) -> dict[str, str]:
    """The conversation as one text cell per column of COLUMNS; "" for what is unset."""
    doc = to_json(conversation)
    doc.update(doc.pop("extracted_data", {}))
    return {column: _cell(doc.get(column)) for column in COLUMNS}


def local_time(stamp: Timestamp, zone: tzinfo | None = None) -> str:
    """`stamp` to the second in `zone` (the machine's own when None), with its UTC offset
    so that no reader has to guess the zone."""
    return stamp.ToDatetime(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


# One column per part of a history event a person reads; the lead "after" is blank for a
# deleted event, whose conversation holds only its keys. The list of changed paths, the
# one cell of any length, comes last.
_AFTER = ("state", "lead_temperature", "lead_score")
EVENT_COLUMNS = ("revision", "at", "kind", "lead", *_AFTER, "changed")


def event_row(event: pb.LeadEvent, zone: tzinfo | None = None) -> dict[str, str]:
    """The event as one text cell per column of EVENT_COLUMNS, `at` in `zone`."""
    lead = event.conversation
    row = {"revision": str(event.revision), "at": local_time(event.at, zone),
           "kind": pb.EventKind.Name(event.kind),
           # A lead known only by its BSUID has no phone: the BSUID names it instead.
           "lead": lead.contact_phone or lead.business_scoped_user_id,
           "changed": ", ".join(event.changed)}
    after = flat(lead) if event.kind == pb.upserted else {}
    return row | {column: after.get(column, "") for column in _AFTER}


def write_jsonl(leads: Iterable[pb.Conversation], out: TextIO) -> int:
    """Write one conversation per line in the contract's JSON; return how many."""
    count = 0
    for lead in leads:
        out.write(json.dumps(to_json(lead), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(leads: Iterable[pb.Conversation], out: TextIO) -> int:
    """Write a header and one row per conversation; return how many."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for lead in leads:
        writer.writerow(flat(lead))
        count += 1
    return count


def event_line(event: pb.LeadEvent) -> str:
    """One change on one line, for `sarah watch`: revision, kind, the lead's key and
    workspace, then (for an upsert) its state, temperature and score and what changed."""
    kind = pb.EventKind.Name(event.kind)
    if event.kind == pb.heartbeat:
        return f"{event.revision} {kind}"
    lead = event.conversation
    key = lead.contact_phone or lead.business_scoped_user_id
    line = f"{event.revision} {kind} {key} workspace={lead.workspace_id or '-'}"
    if event.kind == pb.deleted:
        return line
    return (f"{line} state={pb.State.Name(lead.state)} "
            f"temperature={pb.Temperature.Name(lead.lead_temperature)} "
            f"score={lead.lead_score} changed={','.join(event.changed) or '-'}")
