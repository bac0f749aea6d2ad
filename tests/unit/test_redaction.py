"""Database URLs as they may be shown, and text that quotes one."""

import pytest

from server.storage.database import redact_url, without_secrets


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://postgres:S3cret@db:5432/sarah", "postgresql://postgres:***@db:5432/sarah"),
    ("postgresql://u:p%40ss@db/sarah?sslmode=require",
     "postgresql://u:***@db/sarah?sslmode=require"),
    ("postgresql://u:p@ss@db/sarah", "postgresql://u:***@db/sarah"),  # @ in the password
    ("postgresql://u@db/sarah?sslmode=require&password=S3cret",
     "postgresql://u@db/sarah?sslmode=require&password=***"),
    ("postgres://u:pw@db?sslpassword=k", "postgres://u:***@db?sslpassword=***"),
    ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql://postgres:@/postgres?host=/tmp/pg"),
    ("postgresql://u@db/sarah", "postgresql://u@db/sarah"),
    ("sqlite:///data/sarah.db", "sqlite:///data/sarah.db"),
    ("not a url", "not a url"),
])
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_without_secrets_hides_the_password_as_written_and_decoded() -> None:
    url = "postgresql://u:p%40ss@[::1/x"
    text = f'libpq: end of string reached in URI: "{url}" (password p@ss)'
    assert without_secrets(text, url) == \
        'libpq: end of string reached in URI: "postgresql://u:***@[::1/x" (password ***)'
    assert without_secrets(text, "sqlite:///x.db") == text
