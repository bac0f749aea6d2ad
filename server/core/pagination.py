"""Keyset page tokens for ListLeads: where the last page ended, tied to its query."""

import base64
import binascii
import hashlib
import json
import re

from server.core.domain import WORKSPACE_ID, ListQuery
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


def encode_token(query: ListQuery, position: Position) -> str:
    """Return the opaque page token that continues `query` after `position`."""
    payload = json.dumps([_fingerprint(query), *position], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_token(query: ListQuery) -> Position | None:
    """Return the position `query.page_token` points at, None for the first page.

    Raises InvalidArgument for a token that is malformed or belongs to another query.
    """
    token = query.page_token
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
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
        raise InvalidArgument([("page_token", "is not a token this service issued")])
    if fingerprint != _fingerprint(query):
        raise InvalidArgument(
            [("page_token", "was issued for other filters or order; start from the first page")]
        )
    return key, phone, bsuid, workspace
