"""The contract's rules as plain functions: validation, normalisation, merge and etag."""

import secrets
from dataclasses import replace

from server.core.domain import (
    DEFAULT_ORDER,
    DEFAULT_PAGE_SIZE,
    LANGUAGES,
    ORDERS,
    STATES,
    TEMPERATURES,
    WORKSPACE_ID,
    Lead,
    LeadFilter,
    ListQuery,
    Patch,
)
from server.core.errors import EtagMismatch, InvalidArgument
from server.core.phones import InvalidPhone, normalize_phone

_MAX_COUNT = 1_000_000
_TEXT_LIMITS = {"name": 200, "business_type": 200, "goals": 500}
_MAX_PAIN_POINTS = 20
_MAX_PAIN_POINT_LEN = 500
_MAX_REQUEST_ID = 128
MAX_PAGE_SIZE = 500
_SHOWN = 40


def _shown(value: str) -> str:
    """A caller's value quoted in an error, cut short: gRPC refuses a status over 8 KiB."""
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


class _Violations:
    """Collects every bad field of a request, so one error names them all."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, why: str) -> None:
        self.items.append((field, why))

    def check_range(self, field: str, value: int | None, low: int, high: int) -> None:
        if value is not None and not low <= value <= high:
            self.add(field, f"must be from {low} to {high}, got {value}")

    def check_word(self, field: str, value: str | None, words: tuple[str, ...]) -> None:
        if value is not None and value not in words:
            self.add(field, f"must be one of {', '.join(words)}, got {_shown(value)}")

    def check_text(self, field: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            self.add(field, f"must be at most {limit} characters, got {len(value)}")
        # PostgreSQL text cannot hold NUL; refused on SQLite too, so both stay alike.
        if value is not None and "\x00" in value:
            self.add(field, "must not contain NUL characters")

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)


def _check_workspace(v: _Violations, workspace_id: str | None) -> None:
    if workspace_id is not None and not WORKSPACE_ID.fullmatch(workspace_id):
        v.add("workspace_id", "must be at most 64 characters of A-Z a-z 0-9 _ -")


def _check_phone(v: _Violations, raw: str, region: str) -> str:
    try:
        return normalize_phone(raw, region)
    except InvalidPhone as exc:
        v.add("contact_phone", str(exc))
        return raw


def validate_key(raw_phone: str, workspace_id: str, region: str) -> tuple[str, str]:
    """Return the (workspace_id, E.164 phone) key of a lead, or raise InvalidArgument."""
    v = _Violations()
    _check_workspace(v, workspace_id)
    phone = _check_phone(v, raw_phone, region)
    v.raise_if_any()
    return workspace_id, phone


def validate_patch(patch: Patch, region: str) -> Patch:
    """Return the patch, phone normalised, or raise InvalidArgument naming every bad field."""
    v = _Violations()
    _check_workspace(v, patch.workspace_id)
    phone = _check_phone(v, patch.contact_phone, region)
    v.check_word("state", patch.state, STATES)
    v.check_word("lead_temperature", patch.lead_temperature, TEMPERATURES)
    v.check_word("language", patch.language, LANGUAGES)
    v.check_range("lead_score", patch.lead_score, 0, 100)
    v.check_range("message_count", patch.message_count, 0, _MAX_COUNT)
    v.check_range("add_messages", patch.add_messages, 1, 1000)
    v.check_range("extracted_data.team_size", patch.team_size, 0, _MAX_COUNT)
    for slot, limit in _TEXT_LIMITS.items():
        v.check_text(f"extracted_data.{slot}", getattr(patch, slot), limit)
    if len(patch.pain_points) > _MAX_PAIN_POINTS:
        v.add("extracted_data.pain_points", f"must hold at most {_MAX_PAIN_POINTS} items")
    for i, point in enumerate(patch.pain_points):
        v.check_text(f"extracted_data.pain_points[{i}]", point, _MAX_PAIN_POINT_LEN)
    v.check_text("request_id", patch.request_id, _MAX_REQUEST_ID)
    if patch.message_count is not None and patch.add_messages is not None:
        v.add("add_messages", "cannot be combined with message_count; send one of them")
    v.raise_if_any()
    return replace(patch, contact_phone=phone)


def new_etag() -> str:
    """A fresh opaque etag; random, so a deleted and re-created lead never reuses one."""
    return secrets.token_hex(8)


def apply_patch(patch: Patch, current: Lead | None, now_us: int) -> Lead:
    """Return the conversation after `patch`, given the stored one (None if unknown).

    Raises EtagMismatch when the patch carries an etag that is not the stored one.
    """
    base = current or Lead(workspace_id=patch.workspace_id, contact_phone=patch.contact_phone)
    if patch.etag is not None and patch.etag != base.etag:
        raise EtagMismatch(
            f"etag {_shown(patch.etag)} does not match the stored etag {base.etag!r}; "
            "read the conversation again and retry"
        )
    count = base.message_count
    if patch.message_count is not None:
        count = patch.message_count
    elif patch.add_messages is not None:
        count = base.message_count + patch.add_messages
        if count > _MAX_COUNT:
            raise InvalidArgument(
                [("add_messages", f"would take message_count past {_MAX_COUNT}")]
            )
    changes = {
        name: value
        for name in (
            "state", "lead_score", "lead_temperature", "name", "business_type",
            "team_size", "goals", "language",
        )
        if (value := getattr(patch, name)) is not None
    }
    if patch.pain_points:
        changes["pain_points"] = patch.pain_points
    created = base.created_at if current else now_us
    grew = current is None or count > base.message_count
    return replace(
        base,
        **changes,
        message_count=count,
        created_at=created,
        updated_at=now_us,
        last_message_at=now_us if grew else base.last_message_at,
        etag=new_etag(),
    )


def validate_list_query(query: ListQuery) -> ListQuery:
    """Return the query with defaults filled in, or raise InvalidArgument."""
    v = _Violations()
    _check_filter(v, query.filter)
    order = " ".join(query.order_by.split()).lower() or DEFAULT_ORDER
    v.check_word("order_by", order, ORDERS)
    if query.page_size < 0:
        v.add("page_size", f"must not be negative, got {query.page_size}")
    v.raise_if_any()
    size = min(query.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return replace(query, order_by=order, page_size=size)


def validate_filter(lead_filter: LeadFilter) -> LeadFilter:
    """Return the filter unchanged if valid, else raise InvalidArgument."""
    v = _Violations()
    _check_filter(v, lead_filter)
    v.raise_if_any()
    return lead_filter


def _check_filter(v: _Violations, f: LeadFilter) -> None:
    _check_workspace(v, f.workspace_id)
    v.check_word("temperature", f.temperature, TEMPERATURES)
    v.check_word("state", f.state, STATES)
    v.check_range("min_score", f.min_score, 0, 100)


def imported_lead(
    patch: Patch, created_at: int | None, updated_at: int | None,
    last_message_at: int | None, region: str,
) -> Lead:
    """Return a conversation exported by the earlier backend as a Lead with its own timestamps.

    The fields are checked by the same rules as an upsert (the patch carries every field of
    the conversation); InvalidArgument names every bad field, timestamps included.
    """
    v = _Violations()
    try:
        patch = validate_patch(patch, region)
    except InvalidArgument as exc:
        v.items.extend(exc.violations)
    if created_at is None:
        v.add("created_at", "is required")
    if updated_at is None:
        v.add("updated_at", "is required")
    if created_at is not None and updated_at is not None and updated_at < created_at:
        v.add("updated_at", "must not be before created_at")
    v.raise_if_any()
    assert created_at is not None and updated_at is not None
    lead = apply_patch(patch, None, updated_at)
    # An export without last_message_at still had its first message when it was created.
    return replace(lead, created_at=created_at,
                   last_message_at=created_at if last_message_at is None else last_message_at)


_IMPORT_SLOTS = ("name", "business_type", "team_size", "goals")


def merge_imported(stored: Lead | None, imported: Lead) -> Lead | None:
    """Return the conversation after importing `imported` over `stored`, or None if the
    stored one already holds everything (so importing the same data twice writes nothing).

    The newer of the two by updated_at wins field by field (the stored one on a tie); slots
    it lacks come from the older; created_at keeps the earliest, updated_at,
    last_message_at and message_count the latest.
    """
    if stored is None:
        return imported
    newer, older = (imported, stored) if _later(imported.updated_at, stored.updated_at) else (
        stored, imported)
    slots = {
        slot: getattr(older, slot) if getattr(newer, slot) is None else getattr(newer, slot)
        for slot in _IMPORT_SLOTS
    }
    merged = replace(
        newer,
        **slots,
        workspace_id=stored.workspace_id,
        contact_phone=stored.contact_phone,
        pain_points=newer.pain_points or older.pain_points,
        message_count=max(stored.message_count, imported.message_count),
        created_at=_earliest(stored.created_at, imported.created_at),
        updated_at=_latest(stored.updated_at, imported.updated_at),
        last_message_at=_latest(stored.last_message_at, imported.last_message_at),
        etag=stored.etag,
    )
    return None if merged == stored else replace(merged, etag=new_etag())


def _later(a: int | None, b: int | None) -> bool:
    """Whether time `a` is after `b`; a time that is not known is before every other."""
    return a is not None and (b is None or a > b)


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
