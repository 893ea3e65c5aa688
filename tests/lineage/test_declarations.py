"""Bad lineage declarations fail where they are made (ConfigurationError); the graph's logic."""

from __future__ import annotations

from datetime import timedelta

import pytest

from connectors.jsonl import JsonlSource
from connectors.schedule import CronSchedule, IntervalSchedule
from eventflow import App, ConfigurationError, Settings, flow
from eventflow._datasets import dataset_kind, source_datasets
from eventflow._lineage import Dataset, Edge, Graph


def noop() -> None:
    return None


@pytest.mark.parametrize(
    "name",
    ["orders", "s3:bucket/key", "kafka:", "table:not a table", "http:example.com", ""],
)
def test_an_unknown_or_malformed_dataset_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        flow(reads=[name])(noop)
    with pytest.raises(ConfigurationError):
        flow(writes=[name])(noop)


def test_a_single_string_is_refused_not_read_letter_by_letter() -> None:
    with pytest.raises(ConfigurationError, match="list"):
        flow(reads="table:a.b")(noop)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("kafka:orders", "kafka"),
        ("https://api.example.com/v1/orders", "http"),
        ("http://127.0.0.1:8080/x", "http"),
        ("prometheus:http://prom:9090", "prometheus"),
        ("schedule:nightly", "schedule"),
        ("table:warehouse.orders", "table"),
    ],
)
def test_known_schemes(name: str, kind: str) -> None:
    assert dataset_kind(name) == kind


@pytest.mark.parametrize("period", [timedelta(0), timedelta(seconds=-5), -1.0, 0])
def test_a_period_that_is_not_positive_is_refused(period: timedelta | float) -> None:
    app = App(Settings(database_url="sqlite:///unused.db"))
    source = IntervalSchedule(timedelta(hours=1), name="neg")
    with pytest.raises(ConfigurationError, match="expect_every"):
        app.subscribe(source, flow(name="neg")(noop), expect_every=period)
    with pytest.raises(ConfigurationError, match="fresh_within"):
        flow(writes=["table:a.b"], fresh_within=period)(noop)
    with pytest.raises(ConfigurationError, match="deadline"):
        IntervalSchedule(timedelta(hours=1), deadline=period)


def test_fresh_within_names_only_written_datasets() -> None:
    with pytest.raises(ConfigurationError, match="writes"):
        flow(fresh_within=timedelta(hours=1))(noop)
    with pytest.raises(ConfigurationError, match="not in writes"):
        flow(writes=["table:a.b"], fresh_within={"table:a.c": timedelta(hours=1)})(noop)
    one = flow(writes=["table:a.b", "table:a.c"], fresh_within={"table:a.c": 60})(noop)
    assert one.fresh_within == {"table:a.c": 60.0}


def test_a_flow_that_is_its_own_upstream_is_refused_at_subscribe() -> None:
    app = App(Settings(database_url="sqlite:///unused.db"))
    first = flow(name="first", reads=["table:a.loop"], writes=["table:a.mid"])(noop)
    second = flow(name="second", reads=["table:a.mid"], writes=["table:a.loop"])(noop)
    app.subscribe(IntervalSchedule(timedelta(hours=1), name="one"), first)
    with pytest.raises(ConfigurationError, match="its own upstream"):
        app.subscribe(IntervalSchedule(timedelta(hours=1), name="two"), second)
    with pytest.raises(ConfigurationError, match="its own upstream"):
        app.subscribe(
            IntervalSchedule(timedelta(hours=1), name="three"),
            flow(name="self", reads=["table:a.t"], writes=["table:a.t"])(noop),
        )


def test_sources_are_datasets(tmp_path: object) -> None:
    assert source_datasets(IntervalSchedule(timedelta(minutes=5), name="n")) == ("schedule:n",)
    assert source_datasets(CronSchedule("0 3 * * *", name="nightly")) == ("schedule:nightly",)
    jsonl = JsonlSource(f"{tmp_path}/in.jsonl")
    assert source_datasets(jsonl) == (jsonl.name,)


def test_the_affected_are_everything_downstream_transitively() -> None:
    def dataset(name: str, due: float | None) -> Dataset:
        return Dataset(name, "table", None, None, due, 0.0)

    graph = Graph(
        datasets={
            "kafka:t": dataset("kafka:t", 10.0),
            "table:a.b": dataset("table:a.b", None),
            "table:a.c": dataset("table:a.c", None),
            "table:x.y": dataset("table:x.y", None),
        },
        edges=[
            Edge("ingest", "kafka:t", "reads"),
            Edge("ingest", "table:a.b", "writes"),
            Edge("batch", "table:a.b", "reads"),
            Edge("batch", "table:a.c", "writes"),
            Edge("report", "table:a.c", "reads"),
            Edge("other", "table:x.y", "reads"),
            Edge("report", "kafka:t", "writes"),  # a cycle in the store ends the walk
        ],
    )
    [impact] = graph.late(now=20.0)
    assert impact.flows == ("batch", "ingest", "report")
    assert impact.datasets == ("table:a.b", "table:a.c")
    assert graph.late(now=5.0) == []
    shown = graph.to_json(now=20.0)
    states = {d["name"]: d["state"] for d in shown["datasets"]}
    assert states == {
        "kafka:t": "late",
        "table:a.b": "affected",
        "table:a.c": "affected",
        "table:x.y": "unmonitored",
    }
    assert {f["name"]: f["state"] for f in shown["flows"]}["other"] == "ok"
