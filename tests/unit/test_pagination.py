"""ListLeads page tokens: a token continues its own query, and nothing forged gets through."""

import base64
import json
from dataclasses import replace

import pytest

from server.core.domain import LeadFilter, LeadKey, ListQuery
from server.core.errors import InvalidArgument
from server.core.pagination import (
    _fingerprint,
    decode_history_token,
    decode_token,
    encode_history_token,
    encode_token,
)

QUERY = ListQuery(filter=LeadFilter(temperature="hot"), order_by="lead_score desc",
                  page_size=20)


def _with_token(token: str, query: ListQuery = QUERY) -> ListQuery:
    return replace(query, page_token=token)


def _raw_token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _violation(query: ListQuery) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_token(query)
    [(field, why)] = caught.value.violations
    assert field == "page_token"
    return why


def test_the_first_page_has_no_position() -> None:
    assert decode_token(QUERY) is None


def test_a_token_brings_back_the_position_it_was_made_from() -> None:
    position = (82, "+6281234567890", "ID.1648738043044942", "acme")
    token = encode_token(QUERY, position)
    assert decode_token(_with_token(token)) == position


def test_a_position_of_a_lead_without_a_phone_round_trips() -> None:
    position = (82, "", "ID.1648738043044942", "acme")
    assert decode_token(_with_token(encode_token(QUERY, position))) == position


def test_a_token_issued_before_bsuids_continues_with_no_bsuid() -> None:
    old = _raw_token([_fingerprint(QUERY), 82, "+6281234567890", "acme"])
    assert decode_token(_with_token(old)) == (82, "+6281234567890", "", "acme")


def test_a_token_is_url_safe_and_unpadded() -> None:
    token = encode_token(QUERY, (2**63 - 1, "+6281234567890", ""))
    assert "=" not in token and "+" not in token and "/" not in token


@pytest.mark.parametrize("other", [
    replace(QUERY, order_by="last_message_at desc"),
    replace(QUERY, filter=LeadFilter(temperature="warm")),
    replace(QUERY, filter=LeadFilter(temperature="hot", workspace_id="acme")),
    replace(QUERY, filter=LeadFilter(temperature="hot", min_score=10)),
    replace(QUERY, filter=LeadFilter(temperature="hot", state="handoff")),
])
def test_a_token_of_other_filters_or_order_is_refused(other: ListQuery) -> None:
    token = encode_token(QUERY, (82, "+6281234567890", ""))
    assert "other filters or order" in _violation(_with_token(token, other))


def test_the_page_size_is_not_part_of_what_a_token_is_tied_to() -> None:
    token = encode_token(QUERY, (82, "+6281234567890", ""))
    assert decode_token(_with_token(token, replace(QUERY, page_size=5))) is not None


@pytest.mark.parametrize("token", [
    "not base64!",
    "e30",  # {}
    _raw_token(["x", 2**63, "+6281234567890", ""]),  # past 64 bits
    _raw_token(["x", -1, "+6281234567890", ""]),
    _raw_token(["x", 1.5, "+6281234567890", ""]),
    _raw_token(["x", True, "+6281234567890", ""]),
    _raw_token(["x", 1, "6281234567890", ""]),  # not E.164
    _raw_token(["x", 1, "+62\u0000812", ""]),  # NUL
    _raw_token(["x", 1, "+6281234567890", "bad workspace!"]),
    _raw_token(["x", 1, "+6281234567890"]),  # too short
    base64.urlsafe_b64encode(b'["x", 1, "+6281234567890", "\\ud800"]').decode(),  # lone surrogate
    _raw_token(["x", 1, "+6281234567890", "id.lower", ""]),  # not a BSUID
    _raw_token(["x", 1, "+6281234567890", "ID.1\u0000", ""]),  # NUL in the BSUID
    _raw_token(["x", 1, "+6281234567890", 7, ""]),
])
def test_a_forged_token_is_refused_before_it_reaches_the_database(token: str) -> None:
    assert _violation(_with_token(token)) == "is not a token this service issued"


# ListEvents: a token continues the history of its own lead, before the revision it names.

KEY = LeadKey("toko", "+6281234567890", "")


def _history_violation(token: str, key: LeadKey = KEY) -> str:
    with pytest.raises(InvalidArgument) as caught:
        decode_history_token(key, token)
    [(field, why)] = caught.value.violations
    assert field == "page_token"
    return why


def test_a_history_token_brings_back_its_revision() -> None:
    assert decode_history_token(KEY, "") is None
    assert decode_history_token(KEY, encode_history_token(KEY, 41)) == 41


@pytest.mark.parametrize("other", [
    LeadKey("toko", "+6281234567891", ""), LeadKey("", "+6281234567890", ""),
    LeadKey("toko", "+6281234567890", "ID.1648738043044942"),
])
def test_a_history_token_of_another_key_is_refused(other: LeadKey) -> None:
    assert "another lead's history" in _history_violation(encode_history_token(KEY, 41), other)


@pytest.mark.parametrize("token", [
    "not base64!", "e30", _raw_token(["x"]), _raw_token(["x", 2**63]), _raw_token(["x", -1]),
    _raw_token(["x", True]), _raw_token(["x", 1.5]), _raw_token(["x", "1"]),
    _raw_token(["x", 1, 2]),
    base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # nested past the recursion limit
    encode_token(QUERY, (82, "+6281234567890", "")),  # a ListLeads token
])
def test_a_forged_history_token_is_refused(token: str) -> None:
    assert _history_violation(token) == "is not a token this service issued"
