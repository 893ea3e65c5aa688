"""Which fields are secret, and how their values are masked and redacted (pure logic)."""

from __future__ import annotations

from eventflow._server._masking import SecretMasker, redact
from eventflow._server._settings import ServerSettings


def test_default_fields_match_by_substring_at_any_depth() -> None:
    masker = SecretMasker()
    value = {
        "DB_Password": "pw-123456",
        "user": {"name": "ada", "X-Api-Key": "k-123456", "tokens": ["a1b2c3", "d4e5f6"]},
        "items": [{"client_secret": 12345678}, {"amount": 3}],
        "Authorization": None,
        "note": "password is not a key here",
    }
    assert masker.mask(value) == {
        "DB_Password": "***",
        "user": {"name": "ada", "X-Api-Key": "***", "tokens": "***"},
        "items": [{"client_secret": "***"}, {"amount": 3}],
        "Authorization": "***",
        "note": "password is not a key here",
    }
    assert masker.secret_values(value) == {"pw-123456", "k-123456", "a1b2c3", "d4e5f6", "12345678"}


def test_redact_replaces_secret_values_in_text() -> None:
    text = "login failed for pw-123456 (input_value='pw-123456'), key abc"
    assert redact(text, {"pw-123456", "abc"}) == "login failed for *** (input_value='***'), key ***"
    assert redact(None, {"x"}) is None


def test_secret_fields_come_from_the_environment() -> None:
    settings = ServerSettings.from_env({"EVENTFLOW_SECRET_FIELDS": "ssn, pin"})
    masker = SecretMasker(settings.secret_fields)
    assert masker.mask({"ssn": "1", "PIN_code": "2", "password": "3"}) == {
        "ssn": "***",
        "PIN_code": "***",
        "password": "3",
    }
    assert ServerSettings.from_env({}).secret_fields == (
        "password",
        "secret",
        "token",
        "api_key",
        "authorization",
    )
    assert ServerSettings.from_env({"EVENTFLOW_API_TOKEN": "x"}).token == "x"
