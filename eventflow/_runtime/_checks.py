"""Checks made when a flow is subscribed, so that a mistake fails at start, not once per event."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError

from .._errors import ConfigurationError
from .._flows import Flow
from ._source import Sink, Source
from ._subscription import FailurePolicy

_POLICIES = ("dead_letter", "skip", "stop")


def check_subscription(
    source: Source,
    flow: Flow[Any, Any],
    *,
    on_failure: FailurePolicy | None,
    dead_letter: Sink | None,
    params: Mapping[str, Any] | Callable[..., Any] | None,
    batch_size: int | None,
) -> FailurePolicy:
    """Refuse a subscription that cannot work; return its failure policy.

    Without an explicit `on_failure`, failed events go to the dead-letter
    destination when there is one (`dead_letter`, else the source's own, such
    as a Kafka topic's `<topic>.dlq`), and are skipped otherwise.
    """
    if (params is None or isinstance(params, Mapping)) and batch_size is None:
        check_event_parameters(flow, set(params or ()))
    return failure_policy(source, on_failure, dead_letter)


def check_event_parameters(flow: Flow[Any, Any], supplied: set[str]) -> None:
    """Refuse a flow with a required parameter that no JSON document can give."""
    try:
        hints = typing.get_type_hints(flow.fn)
    except Exception:  # unresolvable annotations: the flow's own validation will say
        return
    for name, parameter in flow.signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is not inspect.Parameter.empty or name in supplied:
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ConfigurationError(
                f"flow {flow.name!r} cannot run from events: its parameter {name!r} is "
                "positional-only, and an event's JSON object gives keyword parameters"
            )
        annotation = hints.get(name, Any)
        try:
            pydantic.TypeAdapter(annotation).json_schema()
        except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema):
            type_name = getattr(annotation, "__qualname__", repr(annotation))
            raise ConfigurationError(
                f"flow {flow.name!r} cannot run from events: its required parameter "
                f"{name!r} is a {type_name}, which no JSON event can give; give it a "
                "default, or supply it with params="
            ) from None


def failure_policy(
    source: Source, on_failure: FailurePolicy | None, dead_letter: Sink | None
) -> FailurePolicy:
    """The policy to use; `"dead_letter"` with nowhere to send is refused."""
    if on_failure is not None and on_failure not in _POLICIES:
        raise ConfigurationError(
            f"on_failure must be 'dead_letter', 'skip' or 'stop', not {on_failure!r}"
        )
    has_destination = dead_letter is not None or source.dead_letter_sink() is not None
    if on_failure is None:
        return "dead_letter" if has_destination else "skip"
    if on_failure == "dead_letter" and not has_destination:
        raise ConfigurationError(
            f"on_failure='dead_letter', but a {type(source).__name__} has no dead-letter "
            "destination of its own: pass dead_letter=<a Sink>, or on_failure='skip' or 'stop'"
        )
    return on_failure
