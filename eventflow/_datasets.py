"""Dataset names: what flows read and write, checked where they are declared.

A dataset is a plain string whose scheme says what it is:

- `kafka:<topic>`: a Kafka topic (a `KafkaSource` reads one per topic);
- `http://...`, `https://...`: a polled URL (without query string or credentials);
- `prometheus:<url>`: a Prometheus scrape target;
- `schedule:<name>`: a schedule's ticks;
- `table:<schema.name>`: a table (or any store a flow writes and another reads);
- `jsonl:<path>`: a JSON-lines file.

An unknown scheme is a `ConfigurationError` where it is declared: a typo must
not silently make a second, unconnected dataset.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from ._context import current_flow_run
from ._errors import ConfigurationError

SCHEMES = ("kafka", "http", "https", "prometheus", "schedule", "table", "jsonl")
"""The dataset kinds; a name's scheme is the text before its first colon."""

_TABLE = re.compile(r"^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*)*$")


def dataset_kind(name: str) -> str:
    """The kind of dataset `name` (its scheme), or ConfigurationError when it is not one."""
    if not isinstance(name, str) or ":" not in name:
        raise ConfigurationError(
            f"dataset {name!r} has no scheme: name it like 'kafka:orders',"
            " 'table:warehouse.orders', 'https://host/path', 'prometheus:<url>' or"
            " 'schedule:<name>'"
        )
    scheme, rest = name.split(":", 1)
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"dataset {name!r}: unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})"
        )
    if not rest or rest.strip() != rest or len(name) > 500:
        raise ConfigurationError(f"dataset {name!r}: an empty or malformed name")
    if scheme == "table" and not _TABLE.match(rest):
        raise ConfigurationError(f"dataset {name!r}: a table is named like 'table:schema.name'")
    if scheme in ("http", "https") and not rest.startswith("//"):
        raise ConfigurationError(f"dataset {name!r}: a URL looks like 'https://host/path'")
    return "http" if scheme == "https" else scheme


def kind_of(name: str) -> str:
    """The kind of a stored dataset name; "source" for a connector's own name."""
    try:
        return dataset_kind(name)
    except ConfigurationError:
        return "source"


def dataset_names(names: Iterable[str] | None, option: str) -> tuple[str, ...]:
    """`names` checked (each once, in order), for a flow's `reads=` or `writes=`."""
    if names is None:
        return ()
    if isinstance(names, str):
        raise ConfigurationError(f"{option} takes a list of dataset names, not one string")
    checked: dict[str, None] = {}
    for name in names:
        dataset_kind(name)
        checked[name] = None
    return tuple(checked)


def period_seconds(value: timedelta | float | None, option: str) -> float | None:
    """A freshness period in seconds; zero or negative is a ConfigurationError."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ConfigurationError(f"{option} must be a positive period, not {value!r}")
    return seconds


def source_datasets(source: Any) -> tuple[str, ...]:
    """The datasets a source reads: its own `datasets` if it says, else from its name.

    A Kafka source reads one `kafka:<topic>` per topic; an HTTP poll its URL;
    a source of a scheme eventflow does not know (a connector of one's own)
    is a dataset by its name.
    """
    declared = getattr(source, "datasets", None)
    if declared:
        return tuple(declared)
    name: str = source.name
    topics = getattr(source, "topics", None)
    if name.startswith("kafka:") and topics:
        return tuple(f"kafka:{topic}" for topic in topics)
    if name.startswith("http:") and name[5:].startswith(("http://", "https://")):
        return (name[5:],)
    return (name,)


class _Recorded:
    """Datasets written at run time (a sink's topic), per flow: what the worker declares next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._new: list[tuple[str, str]] = []

    def add(self, flow_name: str, dataset: str) -> None:
        key = (flow_name, dataset)
        if key in self._seen:  # the usual case, without the lock: a set lookup per call
            return
        with self._lock:
            if key not in self._seen:
                self._seen.add(key)
                self._new.append(key)

    def forget(self) -> None:
        """Record every write again (a worker starting replaces its flows' edges)."""
        with self._lock:
            self._seen.clear()
            self._new.clear()

    def take(self) -> list[tuple[str, str]]:
        """The (flow, dataset) pairs recorded since the last call."""
        with self._lock:
            new, self._new = self._new, []
        return new


RECORDED = _Recorded()


def record_write(dataset: str) -> None:
    """Say that the flow run calling this wrote `dataset` (e.g. a sink's `kafka:<topic>`).

    A sink calls it on publish: the flow then has `dataset` among its writes in
    the lineage graph with nothing declared. Outside a flow run it does nothing.
    Cheap enough for every call: after the first, one set lookup.
    """
    run = current_flow_run.get()
    if run is None:
        return
    flow_name = run.flow_name
    with contextlib.suppress(ConfigurationError):  # an odd topic name: no edge, never an error
        dataset_kind(dataset)
        RECORDED.add(flow_name, dataset)
