"""What a write changed, as the events of the change log: pure functions of the leads
before and after (no storage, no transport)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.core.domain import Lead

UPSERTED = "upserted"
DELETED = "deleted"
HEARTBEAT = "heartbeat"

# Each Lead field a caller sees, and its path as UpsertStateRequest.clear spells it.
# Bookkeeping (created_at, updated_at, etag) changes on every write and is left out.
FIELD_PATHS = {
    "contact_phone": "contact_phone",
    "business_scoped_user_id": "business_scoped_user_id",
    "state": "state",
    "lead_score": "lead_score",
    "lead_temperature": "lead_temperature",
    "name": "extracted_data.name",
    "business_type": "extracted_data.business_type",
    "team_size": "extracted_data.team_size",
    "pain_points": "extracted_data.pain_points",
    "goals": "extracted_data.goals",
    "language": "language",
    "message_count": "message_count",
    "last_message_at": "last_message_at",
    "parent_business_scoped_user_id": "parent_business_scoped_user_id",
    "username": "username",
}


@dataclass(frozen=True)
class Change:
    """One event of a write, before it has a revision: what happened to which lead."""

    kind: str  # UPSERTED or DELETED
    lead: Lead  # as stored after the change; for DELETED, its keys only
    changed: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    """A committed change with its revision and commit time (microseconds)."""

    revision: int
    kind: str
    lead: Lead | None  # None on heartbeats
    changed: tuple[str, ...]
    at: int


def changed_paths(before: Lead | None, after: Lead) -> tuple[str, ...]:
    """The paths of the fields that differ between `before` and `after`; a new lead
    (`before` None) counts from the default lead with no keys."""
    base = before or Lead(workspace_id=after.workspace_id, contact_phone="")
    return tuple(path for field, path in FIELD_PATHS.items()
                 if getattr(base, field) != getattr(after, field))


def keys_only(lead: Lead) -> Lead:
    """What a deleted event tells of a lead: its workspace and keys, all else default."""
    return Lead(workspace_id=lead.workspace_id, contact_phone=lead.contact_phone,
                business_scoped_user_id=lead.business_scoped_user_id)


def changes_of(pairs: Iterable[tuple[Lead | None, Lead | None]]) -> list[Change]:
    """The events of a write from (before, after) per lead it touched, in order: removed
    leads first (a merge's absorbed half), then the others; pairs that did not change
    give none."""
    pairs = [(b, a) for b, a in pairs if b != a]
    removed = [Change(DELETED, keys_only(b), ()) for b, a in pairs if a is None and b is not None]
    kept = [Change(UPSERTED, a, changed_paths(b, a)) for b, a in pairs if a is not None]
    return removed + kept
