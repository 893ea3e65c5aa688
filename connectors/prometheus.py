"""Prometheus scraping: an exposition endpoint scraped on an interval, its samples become events.

    PrometheusScrapeSource("http://127.0.0.1:9100/metrics", interval=15.0,
                           metrics=["node_load1"], labels={"job": "node"})

The text format is parsed by `prometheus_client.parser`. Samples are kept when
their metric (family or sample name) is in `metrics` and their labels match
`labels` (a string matches exactly, a compiled pattern must match in full);
counters' `_created` series are dropped. With `mode="sample"` each kept sample
is one event, keyed by its series (so one series' events run in order); with
`mode="scrape"` each scrape is one event. The event values, which a flow's
parameters validate from:

    sample:  {"name": "http_requests_total", "labels": {"code": "200"}, "type": "counter",
              "value": 1027.0, "rate": 2.5, "timestamp": 1764070000.123}
    scrape:  {"url": "...", "timestamp": 1764070000.123, "samples": [<sample>, ...]}

`timestamp` is the sample's own timestamp when the exposition has one, else
the scrape time (Unix seconds). `rate` is per second, between this scrape and
the previous one, for monotonic series (counters, histogram and summary
`_count`/`_sum`/`_bucket`); it is null on a series' first scrape and for
gauges. A counter that decreased was reset: the rate counts from 0 to the new
value. Non-finite values (NaN, +Inf) are null. Errors are handled as by
`HttpPollSource` (recorded in `source.stats`, backoff, polling goes on); rate
state only advances once the runtime took a scrape's events.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from prometheus_client.parser import text_string_to_metric_families

from eventflow import ConfigurationError
from eventflow.runtime import Backoff, Event, missing_extra

from ._polling import PollBodyError, PollingSource, url_for_names

try:
    import httpx
except ImportError as error:  # without the `http` extra
    raise missing_extra("httpx", "http", "PrometheusScrapeSource") from error

__all__ = ["Backoff", "PrometheusScrapeSource"]

ScrapeMode = Literal["scrape", "sample"]
LabelMatcher = str | re.Pattern[str]
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
_MONOTONIC_SUFFIXES = {
    "counter": None,  # every sample of a counter
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}
_MAX_ID = 500


@dataclass(frozen=True, slots=True)
class _Scrape:
    """What a scrape computed; `delivered` commits `last` as the base of the next rates."""

    samples: list[dict[str, Any]]
    last: dict[SeriesKey, tuple[float, float]]


class PrometheusScrapeSource(PollingSource):
    """Scrapes a text-format endpoint every `interval` seconds; see the module docstring."""

    def __init__(
        self,
        url: str,
        interval: float = 15.0,
        *,
        mode: ScrapeMode = "sample",
        metrics: Collection[str] | None = None,
        labels: Mapping[str, LabelMatcher] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        timeout: float = 10.0,
        max_body_bytes: int = 50 * 2**20,
        jitter: float = 0.1,
        backoff: Backoff | None = None,
        name: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if mode not in ("scrape", "sample"):
            raise ConfigurationError(f"mode must be 'scrape' or 'sample', not {mode!r}")
        super().__init__(
            name=name or f"prometheus:{url_for_names(url)}",
            interval=interval,
            jitter=jitter,
            backoff=backoff,
            timeout=timeout,
            client=client,
            headers={"Accept": _ACCEPT, **(headers or {})},
            auth=auth,
        )
        self.url = url
        self.mode = mode
        self.metrics = frozenset(metrics) if metrics is not None else None
        self.labels = dict(labels or {})
        self.max_body_bytes = max_body_bytes
        self._last: dict[SeriesKey, tuple[float, float]] = {}
        self._scrape: _Scrape | None = None

    async def poll(self, client: httpx.AsyncClient) -> Sequence[Event]:
        self._scrape = None
        fetched = await self.fetch(client, self.url, max_body_bytes=self.max_body_bytes)
        self.stats.last_status = fetched.status
        scraped_at = time.time()
        try:
            text = fetched.body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise PollBodyError(f"the exposition is not UTF-8: {error}") from error
        # parsing a large exposition is CPU work: keep it off the event loop
        scrape = await asyncio.to_thread(self._parse, text, scraped_at)
        self._scrape = scrape
        stamp = f"{self.name}:{int(scraped_at * 1000)}"
        if self.mode == "scrape":
            value = {"url": self.url, "timestamp": scraped_at, "samples": scrape.samples}
            return [Event(id=_bounded(stamp), value=orjson.dumps(value), timestamp=scraped_at)]
        events = []
        for sample in scrape.samples:
            series = _series_name(sample["name"], sample["labels"])
            events.append(
                Event(
                    id=_bounded(f"{stamp}:{series}"),
                    value=orjson.dumps(sample),
                    key=_bounded(series),
                    timestamp=scraped_at,
                )
            )
        return events

    def delivered(self, events: Sequence[Event]) -> None:
        scrape, self._scrape = self._scrape, None
        if scrape is not None:
            self._last = scrape.last

    def _parse(self, text: str, scraped_at: float) -> _Scrape:
        try:
            families = list(text_string_to_metric_families(text))
        except Exception as error:  # the parser raises ValueError and friends on bad input
            raise PollBodyError(f"invalid exposition text: {error}") from error
        counted = {f.name for f in families if f.type in _MONOTONIC_SUFFIXES}
        samples: list[dict[str, Any]] = []
        last: dict[SeriesKey, tuple[float, float]] = {}
        for family in families:
            if family.name.endswith("_created") and family.name[: -len("_created")] in counted:
                continue
            suffixes = _MONOTONIC_SUFFIXES.get(family.type, ())
            for sample in family.samples:
                if sample.name.endswith("_created") and family.type in _MONOTONIC_SUFFIXES:
                    continue
                if not self._wanted(family.name, sample.name, sample.labels):
                    continue
                value = float(sample.value)
                at = float(sample.timestamp) if sample.timestamp is not None else scraped_at
                rate = None
                if suffixes is None or any(sample.name.endswith(s) for s in suffixes):
                    series: SeriesKey = (sample.name, tuple(sorted(sample.labels.items())))
                    rate = _rate(self._last.get(series), value, at)
                    last[series] = (value, at)
                samples.append(
                    {
                        "name": sample.name,
                        "labels": dict(sample.labels),
                        "type": family.type,
                        "value": value,
                        "rate": rate,
                        "timestamp": at,
                    }
                )
        return _Scrape(samples, last)

    def _wanted(self, family: str, name: str, labels: Mapping[str, str]) -> bool:
        if self.metrics is not None and family not in self.metrics and name not in self.metrics:
            return False
        for label, matcher in self.labels.items():
            value = labels.get(label)
            if value is None:
                return False
            if isinstance(matcher, str):
                if value != matcher:
                    return False
            elif matcher.fullmatch(value) is None:
                return False
        return True


def _rate(previous: tuple[float, float] | None, value: float, at: float) -> float | None:
    """Per-second increase since `previous`; a decrease is a reset, counted from 0."""
    if previous is None:
        return None
    before, then = previous
    elapsed = at - then
    if elapsed <= 0 or value != value or before != before:  # same instant, or NaN
        return None
    increase = value - before if value >= before else value
    return increase / elapsed


def _series_name(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def _bounded(text: str) -> str:
    """`text`, or its hash when it is wider than the store's event id and key columns."""
    if len(text) <= _MAX_ID:
        return text
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
