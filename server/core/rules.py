"""The contract's rules as plain functions: validation, normalisation, merge and etag."""

import re
import secrets
import unicodedata
from dataclasses import replace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.core.domain import (
    CLEARABLE,
    DEFAULT_ORDER,
    DEFAULT_PAGE_SIZE,
    LANGUAGES,
    ORDERS,
    STATES,
    TEMPERATURES,
    WORKSPACE_ID,
    IdentityChange,
    Lead,
    LeadFilter,
    LeadKey,
    ListQuery,
    Patch,
    replaced,
)
from server.core.errors import EtagMismatch, InvalidArgument
from server.core.phones import InvalidPhone, normalize_phone

_MAX_COUNT = 1_000_000
# The slots a bot fills from what a lead wrote take WhatsApp's longest text message.
_MAX_SLOT_TEXT = 4096
_TEXT_LIMITS = {"name": _MAX_SLOT_TEXT, "business_type": _MAX_SLOT_TEXT,
                "goals": _MAX_SLOT_TEXT}
_MAX_PAIN_POINTS = 20
_MAX_PAIN_POINT_LEN = _MAX_SLOT_TEXT
_MAX_REQUEST_ID = 128
MAX_PAGE_SIZE = 500
DEFAULT_TIME_ZONE = "Asia/Jakarta"
DEFAULT_ACTIVITY_DAYS = 30
MAX_ACTIVITY_DAYS = 366
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
_SHOWN = 40
# Meta's BSUID: a country code, a dot, then up to 128 letters and digits. A parent BSUID
# (linked business portfolios) is a BSUID or the same with ".ENT." after the country.
BSUID = re.compile(r"[A-Z]{2}\.[A-Za-z0-9]{1,128}")
_PARENT_BSUID = re.compile(r"[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}")
_BSUID_RULE = ("must be two upper-case letters, a dot, then 1 to 128 letters and digits "
               "(e.g. 'ID.1648738043044942')")
_PARENT_BSUID_RULE = ("must be a BSUID or two upper-case letters, '.ENT.', then 1 to 128 "
                      "letters and digits (e.g. 'ID.ENT.88123'), or empty")
_MAX_USERNAME = 64
_MAX_CLEAR = 10
# The key fields a clear may not name: a lead is never left without a key by a clear.
_KEY_PATHS = ("contact_phone", "business_scoped_user_id", "workspace_id")
# The Lead fields of the paths set by a patch, to refuse clearing one in the same write.
_SET_BY_PATCH = ("name", "business_type", "team_size", "goals", "username",
                 "parent_business_scoped_user_id")


def _shown(value: str) -> str:
    """A caller's value quoted in an error, cut short: gRPC refuses a status over 8 KiB."""
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


# gRPC refuses a status over 8 KiB (message and details together): past this many
# problems the caller would get RESOURCE_EXHAUSTED instead of the fields that are wrong.
_MAX_VIOLATIONS = 20


class _Violations:
    """Collects every bad field of a request, so one error names them all (the first
    _MAX_VIOLATIONS of them, and how many more there were)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self._unlisted = 0

    def add(self, field: str, why: str) -> None:
        if len(self.items) < _MAX_VIOLATIONS:
            self.items.append((field, why))
        else:
            self._unlisted += 1

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
        if self._unlisted:
            field = self.items[-1][0]
            self.items.append((field, f"and {self._unlisted} more problems not listed"))
        if self.items:
            raise InvalidArgument(self.items)


def _check_workspace(v: _Violations, workspace_id: str | None) -> None:
    if workspace_id is not None and not WORKSPACE_ID.fullmatch(workspace_id):
        v.add("workspace_id", "must be at most 64 characters of A-Z a-z 0-9 _ -")


def _check_phone(v: _Violations, raw: str, region: str, field: str = "contact_phone") -> str:
    try:
        return normalize_phone(raw, region)
    except InvalidPhone as exc:
        v.add(field, str(exc))
        return raw


def _check_username(v: _Violations, username: str | None) -> None:
    v.check_text("username", username, _MAX_USERNAME)
    if username and any(unicodedata.category(c) == "Cc" for c in username):
        v.add("username", "must not contain control characters")


def _check_parent_bsuid(v: _Violations, parent: str | None) -> None:
    if parent and not _PARENT_BSUID.fullmatch(parent):
        v.add("parent_business_scoped_user_id", f"{_PARENT_BSUID_RULE}, got {_shown(parent)}")


def _check_clear(v: _Violations, patch: Patch) -> None:
    if len(patch.clear) > _MAX_CLEAR:
        # Checking each path too would grow the error past gRPC's 8 KiB status limit.
        v.add("clear", f"must hold at most {_MAX_CLEAR} paths, got {len(patch.clear)}")
        return
    listed = False
    for path in patch.clear:
        field = CLEARABLE.get(path)
        if path in _KEY_PATHS:
            v.add("clear", f"{_shown(path)} is a key and cannot be cleared")
        elif field is None:
            known = "" if listed else f"; one of {', '.join(CLEARABLE)}"
            v.add("clear", f"{_shown(path)} is not a path that can be cleared{known}")
            listed = True
        elif _sets(patch, field):
            v.add("clear", f"{_shown(path)} is also set in this request; send one of them")


def _sets(patch: Patch, field: str) -> bool:
    """Whether the patch sets `field` (an empty pain_points list sets nothing)."""
    if field == "pain_points":
        return bool(patch.pain_points)
    return field in _SET_BY_PATCH and getattr(patch, field) is not None


def _check_bsuid(v: _Violations, field: str, raw: str) -> str:
    bsuid = raw.strip()
    if bsuid and not BSUID.fullmatch(bsuid):
        v.add(field, f"{_BSUID_RULE}, got {_shown(raw)}")
    return bsuid


def _check_lead_key(v: _Violations, raw_phone: str, raw_bsuid: str, region: str,
                    fields: tuple[str, str] = ("contact_phone", "business_scoped_user_id"),
                    ) -> tuple[str, str]:
    """The (E.164 phone or "", BSUID or "") a request names its lead by."""
    phone_field, bsuid_field = fields
    if not raw_phone.strip() and not raw_bsuid.strip():
        why = f"is required: give {phone_field}, {bsuid_field} or both"
        v.add(phone_field, why)
        v.add(bsuid_field, why)
        return "", ""
    bsuid = _check_bsuid(v, bsuid_field, raw_bsuid)
    phone = _check_phone(v, raw_phone, region, phone_field) if raw_phone.strip() else ""
    return phone, bsuid


def validate_key(raw_phone: str, workspace_id: str, region: str,
                 raw_bsuid: str = "") -> LeadKey:
    """Return the key a request names its lead by, or raise InvalidArgument."""
    v = _Violations()
    _check_workspace(v, workspace_id)
    phone, bsuid = _check_lead_key(v, raw_phone, raw_bsuid, region)
    v.raise_if_any()
    return LeadKey(workspace_id, phone, bsuid)


def validate_identity_change(change: IdentityChange, region: str) -> IdentityChange:
    """Return the change with its keys normalised, or raise InvalidArgument.

    The new key must change something: at least one new part, and not only the parts the
    old key already has."""
    v = _Violations()
    old = change.old
    _check_workspace(v, old.workspace_id)
    phone, bsuid = _check_lead_key(v, old.contact_phone, old.business_scoped_user_id, region)
    new_phone, new_bsuid = _check_lead_key(
        v, change.new_contact_phone, change.new_business_scoped_user_id, region,
        ("new_contact_phone", "new_business_scoped_user_id"))
    v.check_text("request_id", change.request_id, _MAX_REQUEST_ID)
    if not v.items and new_phone in ("", phone) and new_bsuid in ("", bsuid):
        why = "the new key is the old one: nothing to change"
        v.add("new_contact_phone" if new_phone else "new_business_scoped_user_id", why)
    v.raise_if_any()
    return replace(change, old=LeadKey(old.workspace_id, phone, bsuid),
                   new_contact_phone=new_phone, new_business_scoped_user_id=new_bsuid)


def validate_patch(patch: Patch, region: str) -> Patch:
    """Return the patch, phone normalised, or raise InvalidArgument naming every bad field."""
    v = _Violations()
    _check_workspace(v, patch.workspace_id)
    phone, bsuid = _check_lead_key(v, patch.contact_phone, patch.business_scoped_user_id, region)
    _check_username(v, patch.username)
    _check_parent_bsuid(v, patch.parent_business_scoped_user_id)
    _check_clear(v, patch)
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
    if (phone, bsuid) == (patch.contact_phone, patch.business_scoped_user_id):
        return patch  # already normal (a copy of a 19-field dataclass costs a write's µs)
    return replace(patch, contact_phone=phone, business_scoped_user_id=bsuid)


def new_etag() -> str:
    """A fresh opaque etag; random, so a deleted and re-created lead never reuses one."""
    return secrets.token_hex(8)


def apply_patch(patch: Patch, current: Lead | None, now_us: int) -> Lead:
    """Return the lead after `patch`, given the stored one (None if unknown).

    Raises EtagMismatch when the patch carries an etag that is not the stored one.
    """
    base = current or Lead(workspace_id=patch.workspace_id, contact_phone=patch.contact_phone,
                           business_scoped_user_id=patch.business_scoped_user_id)
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
            "team_size", "goals", "language", "username", "parent_business_scoped_user_id",
        )
        if (value := getattr(patch, name)) is not None
    }
    if patch.pain_points:
        changes["pain_points"] = patch.pain_points
    for path in patch.clear:
        field = CLEARABLE[path]
        changes[field] = getattr(Lead, field)  # the dataclass default: None, "" or ()
    created = base.created_at if current else now_us
    grew = current is None or count > base.message_count
    return replaced(
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
    size = _page_size(v, query.page_size)
    v.raise_if_any()
    return replace(query, order_by=order, page_size=size)


def _page_size(v: _Violations, page_size: int) -> int:
    """0 means the default; a size over the most is capped, as the contract has it."""
    if page_size < 0:
        v.add("page_size", f"must not be negative, got {page_size}")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def validate_history_query(raw_phone: str, raw_bsuid: str, workspace_id: str, page_size: int,
                           region: str) -> tuple[LeadKey, int]:
    """The key a ListEvents request names and its page size, or raise InvalidArgument."""
    v = _Violations()
    _check_workspace(v, workspace_id)
    phone, bsuid = _check_lead_key(v, raw_phone, raw_bsuid, region)
    size = _page_size(v, page_size)
    v.raise_if_any()
    return LeadKey(workspace_id, phone, bsuid), size


def validate_activity_query(workspace_id: str | None, time_zone: str,
                            days: int) -> tuple[ZoneInfo, int]:
    """The time zone (IANA, default Asia/Jakarta) and number of days (1 to 366, 0 means
    30) of a GetActivity request, or raise InvalidArgument."""
    v = _Violations()
    _check_workspace(v, workspace_id)
    zone = None
    name = time_zone or DEFAULT_TIME_ZONE
    # Only what an IANA name is made of reaches the file system (no dots: no "..").
    if _ZONE_NAME.fullmatch(name):
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            zone = None
    if zone is None:
        v.add("time_zone", f"must be an IANA time zone name such as {DEFAULT_TIME_ZONE!r}, "
                           f"got {_shown(time_zone)}")
    v.check_range("days", days or DEFAULT_ACTIVITY_DAYS, 1, MAX_ACTIVITY_DAYS)
    v.raise_if_any()
    assert zone is not None
    return zone, days or DEFAULT_ACTIVITY_DAYS


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


# The slots a merge fills from the older lead where the newer has none.
_SLOTS = ("name", "business_type", "team_size", "goals", "pain_points", "username",
          "parent_business_scoped_user_id")


def fill_slots(newer: Lead, older: Lead) -> Lead:
    """`newer`, with each slot it lacks (the slot's default) taken from `older`."""
    return replace(newer, **{slot: getattr(older, slot) if _lacks(newer, slot)
                             else getattr(newer, slot) for slot in _SLOTS})


def _lacks(lead: Lead, slot: str) -> bool:
    value: object = getattr(lead, slot)
    default: object = getattr(Lead, slot)  # the dataclass default: None, "" or ()
    return value == default


def merge_imported(stored: Lead | None, imported: Lead) -> Lead | None:
    """Return the lead after importing `imported` over `stored`, or None if the
    stored one already holds everything (so importing the same data twice writes nothing).

    The newer of the two by updated_at wins field by field (the stored one on a tie); slots
    it lacks come from the older; created_at keeps the earliest, updated_at,
    last_message_at and message_count the latest.
    """
    if stored is None:
        return imported
    newer, older = (imported, stored) if later(imported.updated_at, stored.updated_at) else (
        stored, imported)
    merged = replace(
        fill_slots(newer, older),
        workspace_id=stored.workspace_id,
        # The stored lead keeps its keys; a key it lacks comes from the import.
        contact_phone=stored.contact_phone or imported.contact_phone,
        business_scoped_user_id=stored.business_scoped_user_id
        or imported.business_scoped_user_id,
        message_count=max(stored.message_count, imported.message_count),
        created_at=earliest(stored.created_at, imported.created_at),
        updated_at=latest(stored.updated_at, imported.updated_at),
        last_message_at=latest(stored.last_message_at, imported.last_message_at),
        etag=stored.etag,
    )
    return None if merged == stored else replace(merged, etag=new_etag())


def later(a: int | None, b: int | None) -> bool:
    """Whether time `a` is after `b`; a time that is not known is before every other."""
    return a is not None and (b is None or a > b)


def earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def latest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
