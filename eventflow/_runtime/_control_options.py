"""Flow controls keyed by event fields: the options of `App.subscribe`, validated.

Controls are evaluated against the event's decoded JSON object through key
functions (a callable, or a dotted path such as "order.customer_id"). An
event whose key function fails or returns None is not limited by that
control. What enforces them: `_limits` (concurrency, rate limits,
priority), `_debounce_and_batch`, `_claims` (idempotency) and the
runner (singletons).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypedDict, Unpack

KeyFunction = str | Callable[[Any], Any]
"""A callable of the event's decoded JSON object, or a dotted path into it."""

SingletonMode = Literal["skip", "cancel"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def key_getter(spec: KeyFunction) -> Callable[[Any], Any]:
    """A function of the decoded event for `spec`; a path yields None where it is missing."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or not spec or any(not part for part in spec.split(".")):
        raise ValueError(f"a key must be a callable or a dotted path like 'order.id', not {spec!r}")
    parts = tuple(spec.split("."))

    def get(document: Any) -> Any:
        for part in parts:
            if not isinstance(document, dict):
                return None
            document = document.get(part)
        return document

    return get


MESSAGE_ID_KEY = "eventflow-message-id"
"""`idempotency_key=` this: an event whose `eventflow-message-id` header (what
`KafkaSink.publish` sets) a run of the consumer group already completed is a duplicate."""


def by_message_id(document: Any) -> Any:  # pragma: no cover - a marker, never called
    """The idempotency key of `MESSAGE_ID_KEY`: read from the event's headers (RunGate)."""
    return None


def evaluate_key(getter: Callable[[Any], Any] | None, document: Any) -> str | None:
    """The key of an event as text, or None (no getter, it failed, or it gave None)."""
    if getter is None:
        return None
    try:
        value = getter(document)
    except Exception:
        return None
    return None if value is None else str(value)


def evaluate_priority(getter: Callable[[Any], Any] | None, document: Any) -> float:
    """An event's priority (higher starts first); 0 when unknown or not a number."""
    if getter is None:
        return 0.0
    try:
        return float(getter(document))
    except Exception:
        return 0.0


class ControlOptions(TypedDict, total=False):
    """The flow controls `App.subscribe` takes, declared once (see its docstring)."""

    concurrency: int | None
    concurrency_key: KeyFunction | None
    rate_limit: str | None
    rate_limit_key: KeyFunction | None
    idempotency_key: KeyFunction | None
    idempotency_window: timedelta | float
    priority: KeyFunction | None
    debounce: timedelta | float | None
    debounce_key: KeyFunction | None
    batch_size: int | None
    batch_timeout: timedelta | float
    singleton_key: KeyFunction | None
    singleton_mode: SingletonMode
    cancel_on: KeyFunction | None
    cancel_key: KeyFunction | None


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` runs per `per` seconds, with bursts of up to `count`."""

    count: float
    per: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """ "100/s", "30/m", "5/h"."""
        match = _RATE.match(text) if isinstance(text, str) else None
        if match is None or float(match.group(1)) <= 0:
            raise ValueError(f"a rate limit looks like '100/s', '30/m' or '5/h', not {text!r}")
        return cls(float(match.group(1)), _PER[match.group(2)[0]])

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}[self.per]
        return f"{self.count:g}/{unit}"


@dataclass(frozen=True, slots=True)
class Controls:
    """A subscription's flow controls, as `App.subscribe` validated them."""

    concurrency: int | None = None
    concurrency_key: Callable[[Any], Any] | None = None
    rate_limit: Rate | None = None
    rate_limit_key: Callable[[Any], Any] | None = None
    idempotency_key: Callable[[Any], Any] | None = None
    idempotency_window: float = 0.0
    priority: Callable[[Any], Any] | None = None
    debounce: float | None = None
    debounce_key: Callable[[Any], Any] | None = None
    batch_size: int | None = None
    batch_timeout: float = 1.0
    singleton_key: Callable[[Any], Any] | None = None
    singleton_mode: SingletonMode = "skip"
    cancel_on: Callable[[Any], Any] | None = None
    cancel_key: Callable[[Any], Any] | None = None

    @classmethod
    def build(cls, **options: Unpack[ControlOptions]) -> Controls | None:
        """Validated controls, or None when none is asked for (the fast path)."""
        concurrency = options.get("concurrency")
        concurrency_key = options.get("concurrency_key")
        rate_limit = options.get("rate_limit")
        rate_limit_key = options.get("rate_limit_key")
        idempotency_key = options.get("idempotency_key")
        idempotency_window = options.get("idempotency_window", timedelta(hours=24))
        priority = options.get("priority")
        debounce = options.get("debounce")
        debounce_key = options.get("debounce_key")
        batch_size = options.get("batch_size")
        batch_timeout = options.get("batch_timeout", 1.0)
        singleton_key = options.get("singleton_key")
        singleton_mode = options.get("singleton_mode", "skip")
        cancel_on = options.get("cancel_on")
        cancel_key = options.get("cancel_key")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if concurrency_key is not None and concurrency is None:
            raise ValueError("concurrency_key needs concurrency=N")
        if rate_limit_key is not None and rate_limit is None:
            raise ValueError("rate_limit_key needs rate_limit='N/s'")
        if priority is not None and concurrency is None and rate_limit is None:
            raise ValueError("priority orders events waiting for concurrency or rate_limit")
        window = _seconds(idempotency_window)
        if idempotency_key is not None and window <= 0:
            raise ValueError("idempotency_window must be positive")
        quiet = _seconds(debounce) if debounce is not None else None
        if quiet is not None and quiet <= 0:
            raise ValueError("debounce must be positive")
        if debounce_key is not None and debounce is None:
            raise ValueError("debounce_key needs debounce=timedelta(...)")
        if singleton_mode not in ("skip", "cancel"):
            raise ValueError(f"singleton_mode must be 'skip' or 'cancel', not {singleton_mode!r}")
        if singleton_key is not None and debounce is not None:
            raise ValueError("singleton_key cannot be combined with debounce")
        if (cancel_on is None) != (cancel_key is None):
            raise ValueError("cancel_on and cancel_key go together")
        others = (concurrency, rate_limit, idempotency_key, debounce, singleton_key, cancel_on)
        if batch_size is not None:
            if batch_size < 1 or _seconds(batch_timeout) <= 0:
                raise ValueError("batch_size must be >= 1 and batch_timeout positive")
            if any(option is not None for option in others):
                raise ValueError("batch_size cannot be combined with the other flow controls")
        elif all(option is None for option in others):
            return None
        return cls(
            concurrency=concurrency,
            concurrency_key=None if concurrency_key is None else key_getter(concurrency_key),
            rate_limit=None if rate_limit is None else Rate.parse(rate_limit),
            rate_limit_key=None if rate_limit_key is None else key_getter(rate_limit_key),
            idempotency_key=(
                None
                if idempotency_key is None
                else by_message_id
                if idempotency_key == MESSAGE_ID_KEY
                else key_getter(idempotency_key)
            ),
            idempotency_window=window,
            priority=None if priority is None else key_getter(priority),
            debounce=quiet,
            debounce_key=None if debounce_key is None else key_getter(debounce_key),
            batch_size=batch_size,
            batch_timeout=_seconds(batch_timeout),
            singleton_key=None if singleton_key is None else key_getter(singleton_key),
            singleton_mode=singleton_mode,
            cancel_on=None if cancel_on is None else key_getter(cancel_on),
            cancel_key=None if cancel_key is None else key_getter(cancel_key),
        )

    @property
    def gated(self) -> bool:
        return self.concurrency is not None or self.rate_limit is not None


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
