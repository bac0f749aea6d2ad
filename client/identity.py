"""Telling a BSUID from a phone number, where a command takes either."""

import logging
import re
from typing import Any

_LOGGER = logging.getLogger(__name__)

# The contract's BSUID: an ISO country (not checked against the list), a dot, 1-128
# letters and digits. A phone number in any spelling never matches it.
BSUID = re.compile(r"[A-Z]{2}\.[A-Za-z0-9]{1,128}")

PHONE_KEY = "contact_phone"
BSUID_KEY = "business_scoped_user_id"


def is_bsuid(text: str) -> bool:
    """Whether `text` (spaces around it ignored, as the server does) is a BSUID."""
    return BSUID.fullmatch(text.strip()) is not None


def key_field(lead: str) -> str:
    """The request field that carries `lead`: the BSUID's or the phone number's."""
    return BSUID_KEY if is_bsuid(lead) else PHONE_KEY


def lead_key(lead: str) -> dict[str, Any]:
    """`lead` as the keyword fields of a request: {"business_scoped_user_id": "ID.1…"} for
    a BSUID, {"contact_phone": "0812…"} for anything else (the server checks the phone)."""
    return {key_field(lead): lead}

# What UpsertStateRequest.clear may name, as the contract spells them.
CLEAR_PATHS = (
    "extracted_data.name", "extracted_data.business_type", "extracted_data.team_size",
    "extracted_data.pain_points", "extracted_data.goals", "username",
    "parent_business_scoped_user_id",
)
