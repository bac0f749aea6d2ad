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


def _whatsapp_form(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber | None:
    """The number WhatsApp means when it spells `number` its own way, or None if it does not.

    The contract's "WhatsApp's own spellings of some numbers" (v1.1). The cases are the
    ones chatwoot/chatwoot normalises for its WhatsApp inboxes: Brazil's missing ninth
    digit (PR #12655), Mexico's `521` prefix (issue #14048), Argentina's optional `9`.
    The rule works on the parsed number, so a wa_id, a '+' form and a national form of
    one number all land on one key.
    """
    national = str(number.national_number)
    if number.country_code == 52 and len(national) == 11 and national[0] == "1":
        # Mexico dropped the mobile '1' in 2019; WhatsApp still sends 521 + 10 digits.
        rewritten = national[1:]
    elif number.country_code == 55 and len(national) == 10 and national[2] in "6789":
        # Brazil's 8-digit mobiles gained a leading 9 (2012-2016); old accounts lack it.
        # An 8-digit number starting 2-5 is a landline and is left alone.
        rewritten = national[:2] + "9" + national[2:]
    elif number.country_code == 54 and len(national) == 10:
        # Argentina: the contract stores the mobile form, 54 9 + the same 10 digits, even
        # though phonenumbers calls the 54 form a valid landline (chatwoot's
        # argentina_phone_normalizer.rb maps 549 to 54 for that reason; the contract rules).
        rewritten = "9" + national
    else:
        return None
    return phonenumbers.PhoneNumber(
        country_code=number.country_code, national_number=int(rewritten)
    )


def _valid_form(number: phonenumbers.PhoneNumber) -> phonenumbers.PhoneNumber | None:
    """`number` in the form it is stored in, or None if it is not a valid number.

    WhatsApp's form wins when it is a valid number; otherwise the number stands as
    parsed (so an Argentine 0800 number, which has no '9' form, keeps working as in v1).
    """
    whatsapp = _whatsapp_form(number)
    if whatsapp is not None and phonenumbers.is_valid_number(whatsapp):
        return whatsapp
    if phonenumbers.is_valid_number(number):
        return number
    return None


# Kapso asks about the same few leads over and over, and phonenumbers parses each number
# afresh in pure Python: a hit skips that on every call after the first (the profiles:
# bench/README.md, "Where the time goes").
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
        stored = _valid_form(number)
        if stored is not None:
            return phonenumbers.format_number(stored, phonenumbers.PhoneNumberFormat.E164)
    raise InvalidPhone(f"{raw!r} is not a valid phone number")


def check_region(region: str) -> str:
    """Return `region` upper-cased if phonenumbers knows it, else raise ValueError."""
    upper = region.upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {region!r} (expected e.g. ID, US)")
    return upper
