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


@pytest.mark.parametrize(
    "spelling", ["+62 812 3456 7890", "6281234567890", "+6281234567890", " 6281234567890"]
)
@pytest.mark.parametrize("region", ["ID", "BR", "MX", "AR"])
def test_indonesian_mobiles_are_untouched_by_whatsapp_spellings(spelling: str, region: str) -> None:
    # "0812-3456-7890" is pinned in region ID above; these international forms read alike anywhere.
    assert normalize_phone(spelling, region) == "+6281234567890"


@pytest.mark.parametrize(
    ("spelling", "e164"),
    [
        ("021-5555-1234", "+622155551234"),  # Jakarta landline
        ("+62 21 5555 1234", "+622155551234"),
        ("622155551234", "+622155551234"),
        ("0855-1234-5678", "+6285512345678"),  # national digits 855... are not Brazil's 55
        ("6285512345678", "+6285512345678"),
        ("0854-1234-5678", "+6285412345678"),  # ... nor Argentina's 54
    ],
)
def test_indonesian_landlines_and_lookalikes_are_as_before(spelling: str, e164: str) -> None:
    assert normalize_phone(spelling, "ID") == e164


# WhatsApp's own spellings (contract v1.1): each pair is one lead, stored as the right-hand form.


@pytest.mark.parametrize(
    "spelling",
    [
        "5215512345678",
        "+5215512345678",
        "+52 1 55 1234 5678",
        " 5215512345678",
        "525512345678",
        "+525512345678",
    ],
)
def test_mexican_521_is_52(spelling: str) -> None:
    assert normalize_phone(spelling, "ID") == "+525512345678"


def test_mexican_national_spelling_with_the_old_1_is_52() -> None:
    assert normalize_phone("1 55 1234 5678", "MX") == "+525512345678"
    assert normalize_phone("55 1234 5678", "MX") == "+525512345678"


@pytest.mark.parametrize("bad", ["52155123456", "+52155123456", "521234567890", "+5212345678901"])
def test_mexican_near_misses_are_still_refused(bad: str) -> None:
    # 521 + 8 digits, 52 + 10 digits that are no Mexican number, 521 + 10 that are none either.
    with pytest.raises(InvalidPhone):
        normalize_phone(bad, "ID")


@pytest.mark.parametrize(
    "spelling",
    ["551187654321", "+551187654321", "+55 11 8765-4321", "5511987654321", "+5511987654321"],
)
def test_brazilian_mobile_without_the_ninth_digit_gets_it(spelling: str) -> None:
    assert normalize_phone(spelling, "ID") == "+5511987654321"


@pytest.mark.parametrize("first_digit", "6789")
def test_every_brazilian_mobile_range_gets_the_ninth_digit(first_digit: str) -> None:
    assert normalize_phone(f"5521{first_digit}1234567", "ID") == f"+55219{first_digit}1234567"


def test_brazilian_national_spelling_without_the_ninth_digit_gets_it() -> None:
    assert normalize_phone("(11) 8765-4321", "BR") == "+5511987654321"
    assert normalize_phone("(11) 98765-4321", "BR") == "+5511987654321"


@pytest.mark.parametrize(
    ("spelling", "e164"),
    [
        ("551133334444", "+551133334444"),
        ("+55 11 3333-4444", "+551133334444"),
        ("554532782153", "+554532782153"),
        ("552125554444", "+552125554444"),
        ("555155554444", "+555155554444"),
    ],
)
def test_brazilian_landlines_stay_as_they_are(spelling: str, e164: str) -> None:
    assert normalize_phone(spelling, "ID") == e164


def test_brazilian_landline_read_nationally_stays_as_it_is() -> None:
    assert normalize_phone("(11) 3333-4444", "BR") == "+551133334444"


@pytest.mark.parametrize(
    "spelling",
    ["541123456789", "+541123456789", "+54 11 2345-6789", "5491123456789", "+54 9 11 2345-6789"],
)
def test_argentine_54_and_549_are_one_lead_stored_as_549(spelling: str) -> None:
    assert normalize_phone(spelling, "ID") == "+5491123456789"


def test_argentine_5411_landline_spelling_is_stored_as_549_as_the_contract_says() -> None:
    # phonenumbers calls +541133334444 a valid fixed line and +5491133334444 a valid mobile;
    # the contract makes them one lead all the same.
    assert normalize_phone("+541133334444", "ID") == "+5491133334444"
    assert normalize_phone("542214567890", "ID") == "+5492214567890"  # La Plata, 3-digit area code


def test_argentine_national_spellings_are_one_lead() -> None:
    assert normalize_phone("011 2345-6789", "AR") == "+5491123456789"
    assert normalize_phone("011 15 2345-6789", "AR") == "+5491123456789"


def test_argentine_number_without_a_9_form_is_as_before() -> None:
    # 0800 numbers have 10 national digits but no mobile form; v1 accepted them as they are.
    assert normalize_phone("+54 800 123 4567", "ID") == "+548001234567"


@pytest.mark.parametrize("bad", ["+54112345678", "+549112345678", "+5411151234567"])
def test_argentine_near_misses_are_still_refused(bad: str) -> None:
    with pytest.raises(InvalidPhone):
        normalize_phone(bad, "ID")


@pytest.mark.parametrize(
    ("spelling", "region", "e164"),
    [
        ("541 555 0123", "US", "+15415550123"),  # Oregon's area code 541, not Argentina
        ("(521) 555-0123", "US", "+15215550123"),  # a US 521, not Mexico's
        ("+1 551 555 0123", "ID", "+15515550123"),  # New Jersey's 551, not Brazil
        ("54112345678", "ID", "+6254112345678"),  # read in region ID first, as in v1
    ],
)
def test_lookalikes_in_other_countries_are_not_rewritten(
    spelling: str, region: str, e164: str
) -> None:
    assert normalize_phone(spelling, region) == e164
