"""Masking secret fields (parameters, event payloads) in everything the API returns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

MASK = "***"

DEFAULT_SECRET_FIELDS = ("password", "secret", "token", "api_key", "authorization")

_SHORTEST_REDACTED_VALUE = 4
"""Secret values shorter than this are not searched for in free text (too many false hits)."""


class SecretMasker:
    """Replaces the values of secret-named fields by `***`, at any depth.

    A field is secret when its name contains one of `fields` (case-insensitive),
    so `db_password` and `X-Api-Key`-like names are caught by `password`/`api_key`.
    The values found are also redacted from free text (errors, results, logs),
    where a validation error may quote them.
    """

    def __init__(self, fields: Sequence[str] = DEFAULT_SECRET_FIELDS) -> None:
        self.fields = tuple(f.strip().lower().replace("-", "_") for f in fields if f.strip())

    def is_secret(self, name: str) -> bool:
        lowered = name.lower().replace("-", "_")
        return any(field in lowered for field in self.fields)

    def mask(self, value: Any) -> Any:
        """A copy of a JSON-like value with every secret field's value masked."""
        if isinstance(value, dict):
            return {
                k: (MASK if isinstance(k, str) and self.is_secret(k) else self.mask(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.mask(v) for v in value]
        return value

    def secret_values(self, value: Any) -> set[str]:
        """The string forms of every secret field's value in a JSON-like value."""
        found: set[str] = set()
        self._collect(value, found, inside_secret=False)
        return found

    def _collect(self, value: Any, found: set[str], *, inside_secret: bool) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                secret = inside_secret or (isinstance(k, str) and self.is_secret(k))
                self._collect(v, found, inside_secret=secret)
        elif isinstance(value, list):
            for v in value:
                self._collect(v, found, inside_secret=inside_secret)
        elif inside_secret and value is not None and not isinstance(value, bool):
            text = str(value)
            if len(text) >= _SHORTEST_REDACTED_VALUE:
                found.add(text)


def redact(text: str | None, values: Iterable[str]) -> str | None:
    """`text` with every occurrence of the secret `values` replaced by `***`."""
    if not text:
        return text
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
