"""Phone number normalisation: every spelling of one number becomes one E.164 key."""

import functools

import phonenumbers

_MAX_INPUT = 64


class InvalidPhone(ValueError):
    """The text is not a valid phone number; the message says why."""


def _candidates(raw: str) -> list[str]:
    """The spellings to try, most likely first.

    Query strings mangle the leading '+': unencoded it arrives as a space (when the
    front unescapes '+'), form-encoded spaces arrive as inner '+' (when it does not).
    WhatsApp's wa_id has no '+' at all.
    """
    text = raw.strip()
    if text.startswith("+"):
        return ["+" + text[1:].replace("+", " ")]
    if raw[:1].isspace() and text[:1].isdigit():
        return ["+" + text, text]
    if text[:1] in "123456789":
        return [text, "+" + text]
    return [text]


# Kapso asks about the same few leads over and over; parsing is 7% of a GetState.
@functools.lru_cache(maxsize=16384)
def normalize_phone(raw: str, default_region: str) -> str:
    """Return the E.164 form of `raw`, read in `default_region` when it has no country code."""
    if not raw.strip():
        raise InvalidPhone("is required")
    if len(raw) > _MAX_INPUT:
        raise InvalidPhone(f"is longer than {_MAX_INPUT} characters")
    for candidate in _candidates(raw):
        try:
            number = phonenumbers.parse(candidate, default_region)
        except phonenumbers.NumberParseException:
            continue
        if number.extension:
            raise InvalidPhone(f"{raw!r} has an extension; give the number alone")
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhone(f"{raw!r} is not a valid phone number")


def check_region(region: str) -> str:
    """Return `region` upper-cased if phonenumbers knows it, else raise ValueError."""
    upper = region.upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r} (expected e.g. ID, US)")
    return upper
