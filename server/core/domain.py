"""The service's own values: a lead, an upsert patch, list queries, stats."""

import re
from dataclasses import dataclass, field
from typing import Any

STATES = ("greeting", "qualifying", "scoring", "handoff", "completed")
TEMPERATURES = ("cold", "warm", "hot")
LANGUAGES = ("id", "en")
# Each ListLeads order, as its normalised words, and the lead field it sorts by (descending).
ORDER_KEYS = {
    "lead_score desc": "lead_score",
    "last_message_at desc": "last_message_at",
    "created_at desc": "created_at",
    "updated_at desc": "updated_at",
}
ORDERS = tuple(ORDER_KEYS)
DEFAULT_ORDER = ORDERS[0]
DEFAULT_PAGE_SIZE = 50
# The paths UpsertStateRequest.clear may name, and the Lead field each resets.
CLEARABLE = {
    "extracted_data.name": "name",
    "extracted_data.business_type": "business_type",
    "extracted_data.team_size": "team_size",
    "extracted_data.pain_points": "pain_points",
    "extracted_data.goals": "goals",
    "username": "username",
    "parent_business_scoped_user_id": "parent_business_scoped_user_id",
}
# A workspace id: at most 64 characters of A-Z a-z 0-9 _ - ("" is the default workspace).
WORKSPACE_ID = re.compile(r"[A-Za-z0-9_-]{0,64}")


@dataclass(frozen=True)
class Lead:
    """One lead: a contact's conversation state (the proto's Conversation, a row of the
    conversation table). Timestamps are microseconds since the epoch, UTC; None if unset."""

    workspace_id: str
    contact_phone: str
    state: str = "greeting"
    lead_score: int = 0
    lead_temperature: str = "cold"
    name: str | None = None
    business_type: str | None = None
    team_size: int | None = None
    pain_points: tuple[str, ...] = ()
    goals: str | None = None
    language: str = "id"
    message_count: int = 0
    created_at: int | None = None
    updated_at: int | None = None
    last_message_at: int | None = None
    etag: str = ""
    # WhatsApp's business-scoped user id; "" when not known (then contact_phone is set).
    business_scoped_user_id: str = ""
    parent_business_scoped_user_id: str = ""
    username: str = ""

    @property
    def key(self) -> "LeadKey":
        """The keys this lead holds."""
        return LeadKey(self.workspace_id, self.contact_phone, self.business_scoped_user_id)


def replaced(lead: Lead, **changes: Any) -> Lead:
    """`lead` with `changes`, as dataclasses.replace makes it, without its loop over the
    fields in Python (the write path makes a few a call)."""
    return Lead(**{**vars(lead), **changes})


@dataclass(frozen=True)
class Patch:
    """An upsert: the lead, and for each field either a new value or None for "keep"."""

    contact_phone: str
    workspace_id: str = ""
    state: str | None = None
    lead_score: int | None = None
    lead_temperature: str | None = None
    name: str | None = None
    business_type: str | None = None
    team_size: int | None = None
    pain_points: tuple[str, ...] = ()
    goals: str | None = None
    language: str | None = None
    message_count: int | None = None
    add_messages: int | None = None
    etag: str | None = None
    request_id: str = ""
    business_scoped_user_id: str = ""
    parent_business_scoped_user_id: str | None = None
    username: str | None = None
    # Field paths to reset to their default (CLEARABLE), validated by the rules.
    clear: tuple[str, ...] = ()

    @property
    def key(self) -> "LeadKey":
        """The keys the patch names its lead by."""
        return LeadKey(self.workspace_id, self.contact_phone, self.business_scoped_user_id)


@dataclass(frozen=True)
class LeadKey:
    """How a request names a lead: its phone (E.164), its BSUID, or both ("" if not given)."""

    workspace_id: str
    contact_phone: str = ""
    business_scoped_user_id: str = ""


@dataclass(frozen=True)
class IdentityChange:
    """A ChangeIdentity request: the lead's old key, and the key parts that replace it."""

    old: LeadKey
    new_contact_phone: str = ""
    new_business_scoped_user_id: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class LeadFilter:
    """Which leads a list or stats call covers; None means "any"."""

    workspace_id: str | None = None
    temperature: str | None = None
    state: str | None = None
    min_score: int | None = None


@dataclass(frozen=True)
class ListQuery:
    """One page request of ListLeads."""

    filter: LeadFilter = field(default_factory=LeadFilter)
    order_by: str = DEFAULT_ORDER
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str = ""


@dataclass(frozen=True)
class Stats:
    """Aggregates over the leads of a filter."""

    total: int = 0
    by_temperature: dict[str, int] = field(default_factory=dict)
    by_state: dict[str, int] = field(default_factory=dict)
    avg_score: float = 0.0
    revision: int = 0  # the latest revision committed when the counts were read
