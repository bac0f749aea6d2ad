"""Every spelling of one number is one lead; anything else is rejected."""

import pytest

from server.core.phones import InvalidPhone, normalize_phone


@pytest.mark.parametrize(
    "spelling",
    [
        "0812-3456-7890",
        "+62 812 3456 7890",
        "6281234567890",  # WhatsApp's wa_id
        "+6281234567890",
        " 6281234567890",  # ?contact_phone=+628... with '+' unescaped to a space
        "+62+812+3456+7890",  # form-encoded spaces left as '+'
        "(0812) 3456 7890",
    ],
)
def test_indonesian_spellings_are_one_lead(spelling: str) -> None:
    assert normalize_phone(spelling, "ID") == "+6281234567890"


@pytest.mark.parametrize("spelling", ["+14155550123", " 14155550123", "+1 415 555 0123"])
def test_other_countries_stay_as_they_are(spelling: str) -> None:
    assert normalize_phone(spelling, "ID") == "+14155550123"


def test_default_region_is_configurable() -> None:
    assert normalize_phone("(415) 555-0123", "US") == "+14155550123"


@pytest.mark.parametrize("bad", ["08123", "+628123", "", "   ", "hello", "0" * 80, "+0812"])
def test_not_a_phone_number_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone(bad, "ID")


def test_extension_is_rejected() -> None:
    with pytest.raises(InvalidPhone, match="extension"):
        normalize_phone("0812 3456 7890 ext 5", "ID")
