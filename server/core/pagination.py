"""Keyset page tokens for ListLeads and ListEvents: where the last page ended, tied to its
query (a token of one query is refused by another)."""

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from server.core.domain import WORKSPACE_ID, LeadKey, ListQuery
from server.core.errors import InvalidArgument
from server.core.rules import BSUID

_PHONE_RE = re.compile(r"(\+[0-9]{1,19})?")  # "" for a lead known only by its BSUID

# The position after a page: (order key value, contact_phone, business_scoped_user_id,
# workspace_id) of its last lead.
Position = tuple[int, str, str, str]


def _fingerprint(query: ListQuery) -> str:
    """A short digest of the filters and order, so a token is only used with its own query."""
    f = query.filter
    text = json.dumps([f.workspace_id, f.temperature, f.state, f.min_score, query.order_by])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _pack(fields: list[object]) -> str:
    payload = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _unpack(token: str) -> Any:
    """The JSON a token holds; ValueError (or binascii.Error) if it holds none."""
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except RecursionError as exc:  # a forged token of deeply nested lists
        raise ValueError("too deeply nested") from exc


_FORGED = [("page_token", "is not a token this service issued")]
_ELSEWHERE = "was issued for other filters or order; start from the first page"


def encode_token(query: ListQuery, position: Position) -> str:
    """Return the opaque page token that continues `query` after `position`."""
    return _pack([_fingerprint(query), *position])


def decode_token(query: ListQuery) -> Position | None:
    """Return the position `query.page_token` points at, None for the first page.

    Raises InvalidArgument for a token that is malformed or belongs to another query.
    """
    token = query.page_token
    if not token:
        return None
    try:
        fields = _unpack(token)
        if isinstance(fields, list) and len(fields) == 4:
            fields.insert(3, "")  # a token of before BSUIDs: its leads had none
        fingerprint, key, phone, bsuid, workspace = fields
        # Tokens are easy to forge: nothing may reach the database that a stored lead
        # could not hold (a number past 64 bits, NUL, a lone surrogate).
        valid = (type(key) is int and 0 <= key < 2**63
                 and isinstance(phone, str) and bool(_PHONE_RE.fullmatch(phone))
                 and isinstance(bsuid, str) and (bsuid == "" or bool(BSUID.fullmatch(bsuid)))
                 and isinstance(workspace, str) and bool(WORKSPACE_ID.fullmatch(workspace)))
    except (binascii.Error, ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidArgument(_FORGED)
    if fingerprint != _fingerprint(query):
        raise InvalidArgument([("page_token", _ELSEWHERE)])
    return key, phone, bsuid, workspace


def _key_fingerprint(key: LeadKey) -> str:
    text = json.dumps(["history", key.workspace_id, key.contact_phone,
                       key.business_scoped_user_id])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_history_token(key: LeadKey, revision: int) -> str:
    """The page token of ListEvents for `key` that continues before `revision`."""
    return _pack([_key_fingerprint(key), revision])


def decode_history_token(key: LeadKey, token: str) -> int | None:
    """The revision a ListEvents page token continues before, None for the first page.

    Raises InvalidArgument for a token that is malformed or was issued for another key.
    """
    if not token:
        return None
    try:
        fields = _unpack(token)
    except (binascii.Error, ValueError):
        fields = None
    # A number past 64 bits, or a boolean, would reach the database: refused here.
    if not (isinstance(fields, list) and len(fields) == 2 and type(fields[1]) is int
            and 0 <= fields[1] < 2**63):
        raise InvalidArgument(_FORGED)
    fingerprint, revision = fields
    if fingerprint != _key_fingerprint(key):
        raise InvalidArgument([("page_token", "was issued for another lead's history; "
                                              "start from the first page")])
    return int(revision)
