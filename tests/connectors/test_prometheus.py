"""PrometheusScrapeSource against real exporters: prometheus_client and Prometheus itself."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator

import pydantic
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from connectors.http import Backoff
from connectors.prometheus import PrometheusScrapeSource
from eventflow import App, flow
from tests._kafka import wait_until
from tests._prometheus import Prometheus
from tests.connectors._app import completed_event_ids, serving, settings
from tests.connectors._servers import Reply, ScriptedApp, ServerThread, replies

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)


class Sample(pydantic.BaseModel):
    """The documented shape of a sample event, validated by the runtime into the flow."""

    name: str
    labels: dict[str, str]
    type: str
    value: float | None
    rate: float | None
    timestamp: float


class Scrape(pydantic.BaseModel):
    url: str
    timestamp: float
    samples: list[Sample]


class Exporter:
    """A prometheus_client HTTP server on loopback with its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.server, self.thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    server = Exporter()
    try:
        yield server
    finally:
        server.stop()


def sample_app(url: str, source: PrometheusScrapeSource, name: str) -> tuple[App, list[Sample]]:
    seen: list[Sample] = []

    @flow(name=name)
    async def on_sample(sample: Sample) -> None:
        seen.append(sample)

    app = App(settings(url))
    app.subscribe(source, on_sample)
    return app, seen


def assert_rates_follow_the_values(series: list[Sample]) -> None:
    """Each rate is the increase over the time since the previous scrape; a drop is a reset."""
    assert series[0].rate is None
    for before, after in itertools.pairwise(series):
        assert before.value is not None and after.value is not None
        increase = after.value - before.value if after.value >= before.value else after.value
        expected = increase / (after.timestamp - before.timestamp)
        assert after.rate == pytest.approx(expected), (before, after)


async def test_sample_events_keep_only_the_metrics_and_labels_asked_for(
    exporter: Exporter, sqlite_url: str
) -> None:
    jobs = Counter("jobs", "Jobs done", ["queue"], registry=exporter.registry)
    jobs.labels("high").inc(4)
    jobs.labels("low").inc(9)
    Gauge("temperature", "Room temperature", ["room"], registry=exporter.registry).labels("a").set(
        1
    )
    source = PrometheusScrapeSource(
        exporter.url, interval=0.1, metrics=["jobs"], labels={"queue": "high"}, backoff=FAST
    )
    app, seen = sample_app(sqlite_url, source, "prom-filter")
    async with serving(app):
        await wait_until(lambda: len(seen) >= 3, timeout=20)
    assert {(s.name, s.type) for s in seen} == {("jobs_total", "counter")}
    assert all(s.labels == {"queue": "high"} and s.value == 4 for s in seen)
    assert all(s.rate == 0 for s in seen[1:])  # unchanged between scrapes: 0, not missing
    runs = await completed_event_ids(sqlite_url, "prom-filter")
    assert len(runs) >= 3 and len(set(runs)) == len(runs)
    assert all(r.startswith(f"prometheus:{exporter.url}:") for r in runs)


async def test_counter_rates_across_scrapes_and_a_reset(
    exporter: Exporter, sqlite_url: str
) -> None:
    requests = Counter("requests", "Requests served", registry=exporter.registry)
    requests.inc(5)
    source = PrometheusScrapeSource(exporter.url, interval=0.1, metrics=["requests"], backoff=FAST)
    app, seen = sample_app(sqlite_url, source, "prom-rates")

    def values() -> list[float | None]:
        return [s.value for s in sorted(seen, key=lambda s: s.timestamp)]

    async with serving(app):
        await wait_until(lambda: values().count(5) >= 2, timeout=20)
        requests.inc(10)
        await wait_until(lambda: values().count(15) >= 2, timeout=20)
        # the exporting process restarts: the counter starts again from zero
        exporter.registry.unregister(requests)
        Counter("requests", "Requests served", registry=exporter.registry).inc(3)
        await wait_until(lambda: 3 in values(), timeout=20)
    series = sorted(seen, key=lambda s: s.timestamp)
    assert {s.name for s in series} == {"requests_total"}  # no requests_created
    assert_rates_follow_the_values(series)
    reset = next(after for before, after in itertools.pairwise(series) if after.value == 3)
    assert reset.rate is not None and reset.rate > 0  # from 0 to 3, never negative
    assert all(s.rate is None or s.rate >= 0 for s in series)
    assert any(s.rate is not None and s.rate > 0 and s.value == 15 for s in series)


async def test_scrape_mode_is_one_event_per_scrape(exporter: Exporter, sqlite_url: str) -> None:
    Counter("hits", "Hits", registry=exporter.registry).inc(2)
    Gauge("queue_depth", "Depth", registry=exporter.registry).set(7)
    source = PrometheusScrapeSource(exporter.url, interval=0.1, mode="scrape", backoff=FAST)
    scrapes: list[Scrape] = []

    @flow(name="prom-scrapes")
    async def on_scrape(scrape: Scrape) -> None:
        scrapes.append(scrape)

    app = App(settings(sqlite_url))
    app.subscribe(source, on_scrape)
    async with serving(app):
        await wait_until(lambda: len(scrapes) >= 3, timeout=20)
    assert len(await completed_event_ids(sqlite_url, "prom-scrapes")) == len(scrapes)
    for scrape in scrapes:
        assert scrape.url == exporter.url
        by_name = {s.name: s for s in scrape.samples}
        assert set(by_name) == {"hits_total", "queue_depth"}  # hits_created is dropped
        assert by_name["queue_depth"].value == 7 and by_name["queue_depth"].rate is None
    later = sorted(scrapes, key=lambda s: s.timestamp)[1:]
    assert all({s.name: s.rate for s in scrape.samples}["hits_total"] == 0 for scrape in later)


async def test_an_invalid_exposition_is_recorded_and_scraping_goes_on(sqlite_url: str) -> None:
    scripted = ScriptedApp()
    path = scripted.route(
        "/metrics",
        replies(
            Reply(body=b"<html>not metrics</html>"),
            Reply(body=b"# TYPE up gauge\nup 1\n"),
        ),
    )
    server = ServerThread(scripted).start()
    try:
        source = PrometheusScrapeSource(server.url + path, interval=0.1, backoff=FAST)
        app, seen = sample_app(sqlite_url, source, "prom-invalid")
        async with serving(app) as serve_task:
            await wait_until(lambda: len(seen) >= 1, timeout=20)
            assert not serve_task.done()
    finally:
        server.stop()
    assert source.stats.errors_by_kind == {"PollBodyError": 1}
    assert source.stats.last_error is not None and "invalid exposition" in source.stats.last_error
    assert (seen[0].name, seen[0].value) == ("up", 1)


async def test_the_prometheus_servers_own_metrics(prometheus: Prometheus, sqlite_url: str) -> None:
    source = PrometheusScrapeSource(
        prometheus.metrics_url,
        interval=0.2,
        metrics=["prometheus_http_requests_total"],
        labels={"handler": re.compile(r"/metr.*"), "code": "200"},
        backoff=FAST,
    )
    app, seen = sample_app(sqlite_url, source, "prom-server")
    async with serving(app):
        await wait_until(lambda: len(seen) >= 4, timeout=30)
    series = sorted(seen, key=lambda s: s.timestamp)
    assert {s.name for s in series} == {"prometheus_http_requests_total"}
    assert all(s.labels["handler"] == "/metrics" and s.labels["code"] == "200" for s in series)
    assert all(s.type == "counter" for s in series)
    assert_rates_follow_the_values(series)
    # every scrape is itself a request to /metrics: the counter grows between scrapes
    assert all(s.rate is not None and s.rate > 0 for s in series[1:])


async def test_a_federated_series_from_a_prometheus_scraping_an_exporter(
    exporter: Exporter, sqlite_url: str
) -> None:
    Counter("orders", "Orders", registry=exporter.registry).inc(3)
    target = exporter.url.removeprefix("http://").removesuffix("/metrics")
    server = await asyncio.to_thread(
        Prometheus.start_new, scrape_targets=[target], scrape_interval="1s"
    )
    try:
        up = await asyncio.to_thread(server.wait_for, 'up{job="targets"} == 1')
        assert up[0]["metric"]["instance"] == target
        source = PrometheusScrapeSource(
            f"{server.url}/federate?match[]=orders_total",
            interval=0.2,
            metrics=["orders_total"],
            backoff=FAST,
        )
        app, seen = sample_app(sqlite_url, source, "prom-federate")
        async with serving(app):
            await wait_until(lambda: len(seen) >= 2, timeout=30)
    finally:
        await asyncio.to_thread(server.stop)
    assert all(s.value == 3 for s in seen)
    assert all(s.labels["job"] == "targets" and s.labels["instance"] == target for s in seen)
    # federation carries Prometheus' own sample timestamps (milliseconds), kept as they are
    assert all(s.timestamp == round(s.timestamp, 3) for s in seen)
