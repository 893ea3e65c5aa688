"""eventflow.testing.TestApp: an App run without a broker, everything else as in production."""

from __future__ import annotations

import asyncio
import itertools
import time

import pydantic
import pytest

from connectors.http import HttpPollSource
from connectors.kafka import KafkaSource
from eventflow import App, flow, get_run_logger, task
from eventflow.testing import EventNotRunError, TestApp
from tests._kafka import wait_until


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int


@task(retries=2, retry_delay_seconds=0)
def fetch_customer(customer_id: str) -> dict[str, str]:
    return {"id": customer_id, "name": "Ada"}


@task
def load(order: Order, customer: dict[str, str]) -> None:
    get_run_logger().info("loaded %s for %s", order.id, customer["name"])


@flow(name="process-order")
def process_order(order: Order, min_amount: int = 20) -> str:
    customer = fetch_customer.submit(order.customer_id)
    if order.amount < min_amount:
        get_run_logger().info("skipping small order %s", order.id)
        return "skipped"
    load(order, customer)
    return "loaded"


def kafka_source(topic: str = "orders") -> KafkaSource:
    # never connected: TestApp reads from memory in its place
    return KafkaSource(topic, bootstrap_servers="127.0.0.1:1", group_id=topic)


def orders_app(**options: object) -> tuple[App, KafkaSource]:
    source = kafka_source()
    app = App()
    app.subscribe(source, process_order, **options)  # type: ignore[arg-type]
    return app, source


async def test_publish_returns_the_finished_run_with_result_task_runs_and_logs() -> None:
    app, orders = orders_app()
    async with TestApp(app) as test:
        run = await test.publish(orders, {"id": "o1", "customer_id": "c1", "amount": 50}, key="c1")
    assert run.state == "COMPLETED" and run.state_name == "Completed"
    assert run.result == "loaded" and run.error is None
    assert run.flow_name == "process-order" and run.event_key == "c1"
    assert [(t.name, t.state) for t in run.task_runs] == [
        ("fetch_customer", "COMPLETED"),
        ("load", "COMPLETED"),
    ]
    assert "loaded o1 for Ada" in [log.message for log in run.logs]


async def test_the_issue_example_as_written() -> None:
    app, orders_source = orders_app()
    async with TestApp(app) as test:
        run = await test.publish(
            orders_source, {"id": "o1", "customer_id": "c1", "amount": 50}, key="c1"
        )
        assert run.state == "COMPLETED" and run.result == "loaded"
        assert [t.name for t in run.task_runs] == ["fetch_customer", "load"]
        bad = await test.publish(orders_source, b"not json")
        assert bad.state == "FAILED" and test.dead_letters(orders_source)


async def test_poison_and_invalid_events_fail_and_go_to_the_dead_letter_sink() -> None:
    app, orders = orders_app()
    async with TestApp(app) as test:
        bad = await test.publish(orders, b"\xffnot json", key="k")
        invalid = await test.publish(orders, {"id": "o2"})
        good = await test.publish(orders, Order(id="o3", customer_id="c", amount=5))
        letters = test.dead_letters(orders)
    assert bad.state == "FAILED" and invalid.state == "FAILED"
    assert good.state == "COMPLETED" and good.result == "skipped"
    assert [letter.value for letter in letters] == [b"\xffnot json", b'{"id":"o2"}']
    assert letters[0].key == b"k" and letters[0].flow_run_id == bad.id
    assert letters[0].error and letters[0].error == bad.error
    assert "customer_id" in (letters[1].error or "")
    assert letters[1].event_id == invalid.event_id


async def test_skip_policy_sends_nothing_and_an_http_source_has_no_dead_letter_sink() -> None:
    app, orders = orders_app(on_failure="skip")
    feed = HttpPollSource("http://127.0.0.1:1/orders", interval=1.0)
    app.subscribe(feed, process_order)
    async with TestApp(app) as test:
        assert (await test.publish(orders, b"x")).state == "FAILED"
        assert (await test.publish(feed, "not json either")).state == "FAILED"
        assert test.dead_letters(orders) == [] and test.dead_letters(feed) == []


async def test_stop_policy_stops_the_partition_and_what_comes_after_is_not_run() -> None:
    release = asyncio.Event()
    started: list[str] = []

    @flow(name="stoppable")
    async def stoppable(id: str) -> str:
        started.append(id)
        if id == "bad":
            raise ValueError("cannot")
        if id == "slow":
            await release.wait()
        return id

    source = kafka_source("stoppable")
    app = App()
    app.subscribe(source, stoppable, on_failure="stop")
    async with TestApp(app) as test:
        slow = test.send(source, {"id": "slow"}, key="b")
        await wait_until(lambda: started == ["slow"], timeout=10, interval=0.01)
        bad = test.send(source, {"id": "bad"}, key="a")
        after = test.send(source, {"id": "after"}, key="a")
        assert (await bad).state == "FAILED"
        with pytest.raises(EventNotRunError, match="partition stopped at event"):
            await after
        release.set()
        assert (await slow).state == "COMPLETED"  # in flight on another key: it ends as usual
        with pytest.raises(EventNotRunError, match="partition stopped"):
            await test.publish(source, {"id": "later"})
        assert test.dead_letters(source) == []
    assert "after" not in started


async def test_retries_run_as_in_production() -> None:
    attempts: list[float] = []

    @task(retries=3, retry_delay_seconds=0.05)
    def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @flow(name="retrying", retries=1)
    def retrying(id: str) -> str:
        return flaky()

    source = kafka_source("retries")
    app = App()
    app.subscribe(source, retrying)
    async with TestApp(app) as test:
        run = await test.publish(source, {"id": "x"})
    assert run.state == "COMPLETED" and run.result == "ok" and run.run_count == 1
    (task_run,) = run.task_runs
    assert task_run.run_count == 3 and task_run.state == "COMPLETED"
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(attempts))


async def test_events_of_one_key_run_in_order_and_other_keys_meanwhile() -> None:
    started: list[str] = []
    release = asyncio.Event()

    @flow(name="ordered")
    async def ordered(id: str, customer: str) -> str:
        started.append(id)
        if id == "a0":
            await release.wait()
        return id

    source = kafka_source("ordered")
    app = App()
    app.subscribe(source, ordered)
    async with TestApp(app) as test:
        sent = [
            test.send(source, {"id": f"{key}{i}", "customer": key}, key=key)
            for i in range(3)
            for key in "ab"
        ]
        b_runs = [await sent[i] for i in (1, 3, 5)]  # b's runs end while a0 holds key a
        assert [r.result for r in b_runs] == ["b0", "b1", "b2"]
        assert started.count("a0") == 1 and "a1" not in started
        release.set()
        a_runs = [await sent[i] for i in (0, 2, 4)]
    assert [r.state for r in a_runs] == ["COMPLETED"] * 3
    assert [i for i in started if i.startswith("a")] == ["a0", "a1", "a2"]


async def test_a_concurrency_limit_holds_events_back_as_in_production() -> None:
    running = 0
    most = 0
    release = asyncio.Event()

    @flow(name="limited")
    async def limited(id: str, customer_id: str) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await release.wait()
            return id
        finally:
            running -= 1

    source = kafka_source("limited")
    app = App()
    app.subscribe(source, limited, concurrency=2, concurrency_key="customer_id")
    async with TestApp(app) as test:
        # each event has a Kafka key of its own: only the control holds them back
        sent = [
            test.send(source, {"id": f"o{i}", "customer_id": "c"}, key=f"k{i}") for i in range(5)
        ]

        async def waiting() -> bool:
            pending = [r.state_name for r in await test.runs() if r.state == "PENDING"]
            return pending == ["AwaitingConcurrency"] * 3

        await wait_until(waiting, timeout=10, interval=0.01)
        assert running == 2
        release.set()
        runs = [await s for s in sent]
    assert [r.state for r in runs] == ["COMPLETED"] * 5
    assert most == 2


async def test_idempotency_key_turns_a_repeated_event_into_a_duplicate() -> None:
    app, orders = orders_app(idempotency_key="id")
    order = {"id": "o1", "customer_id": "c1", "amount": 50}
    async with TestApp(app) as test:
        first = await test.publish(orders, order)
        again = await test.publish(orders, order)
        linked = await test.run(again.linked_run_id or "")
    assert first.state == "COMPLETED"
    assert (again.state, again.state_name) == ("CANCELLED", "Duplicate")
    assert linked.id == first.id


def test_the_sync_form_for_sync_test_suites() -> None:
    app, orders = orders_app()
    with TestApp(app) as test:
        run = test.publish(orders, {"id": "o1", "customer_id": "c1", "amount": 5}, key="c1")
        later = test.send(orders, b"nope")
        assert later.result().state == "FAILED"
        assert len(test.dead_letters(orders)) == 1
        assert [r.id for r in test.runs()] == [run.id, later.result().id]
    assert run.state == "COMPLETED" and run.result == "skipped"
    assert "skipping small order o1" in [log.message for log in run.logs]


async def test_each_test_app_has_a_fresh_store_that_is_gone_afterwards() -> None:
    app, orders = orders_app()
    test = TestApp(app)
    async with test:
        await test.publish(orders, {"id": "o1", "customer_id": "c1", "amount": 50})
        assert len(await test.runs()) == 1
        directory = test.store_directory
        assert directory is not None and (directory / "runs.db").exists()
    assert not directory.exists()
    async with TestApp(app) as test:
        assert await test.runs() == []


async def test_a_source_feeding_two_flows_runs_both_and_returns_the_one_asked_for() -> None:
    @flow(name="audit")
    def audit(id: str) -> str:
        return f"audited {id}"

    app, orders = orders_app()
    app.subscribe(orders, audit)
    async with TestApp(app) as test:
        with pytest.raises(ValueError, match="several flows"):
            test.send(orders, {"id": "o0"})
        run = await test.publish(orders, {"id": "o1"}, flow=audit)
        assert run.result == "audited o1"
        other = await test.publish(orders, {"id": "o2"}, flow=process_order)
        assert other.state == "FAILED"  # customer_id and amount are missing
        assert {r.flow_name for r in await test.runs()} == {"audit", "process-order"}
        assert len(await test.runs(audit)) == 2
        # process-order got both events, failed both: each is a dead letter of its own
        letters = test.dead_letters(orders, flow=process_order)
        assert [d.event_id for d in letters] == [run.event_id, other.event_id]
        assert test.dead_letters(orders, flow=audit) == []


async def test_mistakes_are_told_at_once_and_a_run_that_never_ends_times_out() -> None:
    never = asyncio.Event()

    @flow(name="stuck")
    async def stuck(id: str) -> None:
        await never.wait()

    source = kafka_source("stuck")
    app = App()
    app.subscribe(source, stuck)
    test = TestApp(app, timeout=0.2)
    with pytest.raises(RuntimeError, match="inside `async with"):
        await test.publish(source, {})
    async with test:
        with pytest.raises(ValueError, match="kafka:other is not subscribed"):
            await test.publish(kafka_source("other"), {})
        with pytest.raises(TimeoutError, match=r"did not end within 0\.2s"):
            await test.publish(source, {"id": "s1"})
        never.set()
