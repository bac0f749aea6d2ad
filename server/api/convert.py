"""Translation between protobuf messages and the service's own values."""

import functools
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from sarah.v1 import sarah_pb2 as pb
from server.core.activity import ActivityDay
from server.core.changes import Event
from server.core.domain import IdentityChange, Lead, LeadFilter, LeadKey, Patch, Stats


class _Enum(Protocol):
    """A generated enum (pb.State, ...): its words by number."""

    def Name(self, number: Any) -> str: ...  # noqa: N802 - protobuf's name


def _word(enum: _Enum, number: int) -> str:
    """The enum word of `number`; an unknown number stays a number, which rules reject."""
    try:
        return enum.Name(number)
    except ValueError:
        return str(number)


def _optional_word(message: Message, field: str, enum: _Enum) -> str | None:
    return _word(enum, getattr(message, field)) if message.HasField(field) else None


def _optional(message: Message, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _timestamp(us: int | None) -> timestamp_pb2.Timestamp | None:
    if us is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(us)
    return stamp


# Enum numbers by word, looked up once: Value() is a call into protobuf each time.
_STATES = dict(pb.State.items())
_TEMPERATURES = dict(pb.Temperature.items())
_LANGUAGES = dict(pb.Language.items())


def lead_to_proto(lead: Lead) -> pb.Conversation:
    # Timestamps are set in place: one built apart would be copied into the message.
    # (A third cheaper than before, measured with timeit: every read and write returns one.)
    message = pb.Conversation(
        contact_phone=lead.contact_phone,
        workspace_id=lead.workspace_id,
        state=_STATES[lead.state],
        lead_score=lead.lead_score,
        lead_temperature=_TEMPERATURES[lead.lead_temperature],
        extracted_data=pb.ExtractedData(
            name=lead.name, business_type=lead.business_type, team_size=lead.team_size,
            pain_points=lead.pain_points, goals=lead.goals,
        ),
        language=_LANGUAGES[lead.language],
        message_count=lead.message_count,
        etag=lead.etag,
        business_scoped_user_id=lead.business_scoped_user_id,
        parent_business_scoped_user_id=lead.parent_business_scoped_user_id,
        username=lead.username,
    )
    if lead.created_at is not None:
        message.created_at.FromMicroseconds(lead.created_at)
    if lead.updated_at is not None:
        message.updated_at.FromMicroseconds(lead.updated_at)
    if lead.last_message_at is not None:
        message.last_message_at.FromMicroseconds(lead.last_message_at)
    return message


def _varint(n: int) -> bytes:
    """`n` (not negative) as a protobuf varint: seven bits a byte, low first."""
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# A repeated message field on the wire is each item's tag, length and bytes, one after
# another: a page can be joined from its leads' bytes and parsed once.
_LEADS_TAG = _varint(pb.ListLeadsResponse.DESCRIPTOR.fields_by_name["leads"].number << 3 | 2)


@functools.lru_cache(maxsize=1024)
def _listed(lead: Lead) -> bytes:
    """`lead` as one item of ListLeadsResponse.leads on the wire. Kept for the leads seen
    lately (a Lead is immutable, and equal Leads make equal bytes): a dashboard lists the
    same leads over and over, and building each Conversation cost most of a page.
    Bounded as storage's PageLeads are (storage/page_leads.py): two pages of the most leads
    a page has."""
    body = lead_to_proto(lead).SerializeToString()
    return _LEADS_TAG + _varint(len(body)) + body


def list_to_proto(leads: Iterable[Lead], next_page_token: str,
                  revision: int) -> pb.ListLeadsResponse:
    """The ListLeads answer of a page: its leads' kept bytes joined, parsed once."""
    message = pb.ListLeadsResponse(next_page_token=next_page_token, revision=revision)
    message.MergeFromString(b"".join(map(_listed, leads)))
    return message


def patch_from_proto(request: pb.UpsertStateRequest) -> Patch:
    data = request.extracted_data
    return Patch(
        contact_phone=request.contact_phone,
        workspace_id=request.workspace_id,
        state=_optional_word(request, "state", pb.State),
        lead_score=_optional(request, "lead_score"),
        lead_temperature=_optional_word(request, "lead_temperature", pb.Temperature),
        name=_optional(data, "name"),
        business_type=_optional(data, "business_type"),
        team_size=_optional(data, "team_size"),
        pain_points=tuple(data.pain_points),
        goals=_optional(data, "goals"),
        language=_optional_word(request, "language", pb.Language),
        message_count=_optional(request, "message_count"),
        add_messages=_optional(request, "add_messages"),
        etag=_optional(request, "etag"),
        request_id=request.request_id,
        business_scoped_user_id=request.business_scoped_user_id,
        parent_business_scoped_user_id=_optional(request, "parent_business_scoped_user_id"),
        username=_optional(request, "username"),
        clear=tuple(request.clear),
    )


def identity_change_from_proto(request: pb.ChangeIdentityRequest) -> IdentityChange:
    return IdentityChange(
        old=LeadKey(request.workspace_id, request.contact_phone,
                    request.business_scoped_user_id),
        new_contact_phone=request.new_contact_phone,
        new_business_scoped_user_id=request.new_business_scoped_user_id,
        request_id=request.request_id,
    )


def filter_from_proto(request: pb.ListLeadsRequest | pb.GetStatsRequest) -> LeadFilter:
    if isinstance(request, pb.GetStatsRequest):
        return LeadFilter(workspace_id=_optional(request, "workspace_id"))
    return LeadFilter(
        workspace_id=_optional(request, "workspace_id"),
        temperature=_optional_word(request, "temperature", pb.Temperature),
        state=_optional_word(request, "state", pb.State),
        min_score=_optional(request, "min_score"),
    )


def stats_to_proto(stats: Stats) -> pb.GetStatsResponse:
    return pb.GetStatsResponse(
        total=stats.total,
        hot=stats.by_temperature.get("hot", 0),
        warm=stats.by_temperature.get("warm", 0),
        cold=stats.by_temperature.get("cold", 0),
        avg_score=stats.avg_score,
        by_state=pb.StateCounts(**{s: n for s, n in stats.by_state.items()}),
        revision=stats.revision,
    )


def event_to_proto(event: Event) -> pb.LeadEvent:
    """The LeadEvent of `event`. A change is converted once for all its watchers (they get
    equal Events: the same one from the tailer, or one read from the log while catching
    up), since building the message cost a watcher about a third of sending it; a
    heartbeat, different every time, is not kept. The message is shared between threads:
    read it, never change it."""
    if event.lead is None:
        return _to_proto(event)
    message = _converted.get(event)
    if message is None:  # two threads may both build it: the same message, either kept
        message = _converted[event] = _to_proto(event)
    return message


# Kept only while some watcher still holds the Event: the conversion of a change erased
# since then is not kept in memory past its last watcher.
_converted: weakref.WeakKeyDictionary[Event, pb.LeadEvent] = weakref.WeakKeyDictionary()


def _to_proto(event: Event) -> pb.LeadEvent:
    message = pb.LeadEvent(revision=event.revision, kind=pb.EventKind.Value(event.kind),
                           changed=event.changed, at=_timestamp(event.at))
    if event.lead is not None:
        message.conversation.CopyFrom(lead_to_proto(event.lead))
    return message


_INT32_MAX = 2**31 - 1


def activity_to_proto(days: list[ActivityDay], time_zone: str) -> pb.GetActivityResponse:
    # Storage counts in 64 bits; a day past int32 (billions of messages) shows the most
    # int32 holds rather than failing the call.
    return pb.GetActivityResponse(time_zone=time_zone, days=[pb.ActivityDay(
        date=day.date.isoformat(),
        new_leads=min(day.new_leads, _INT32_MAX), messages=min(day.messages, _INT32_MAX),
        reached_handoff=min(day.reached_handoff, _INT32_MAX),
        reached_completed=min(day.reached_completed, _INT32_MAX),
        became_hot=min(day.became_hot, _INT32_MAX)) for day in days])
