"""WebhookNotifier as a flow hook: a real receiver on loopback, retries, no waiting."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from eventflow import Notification, WebhookNotifier, flow
from eventflow._store._migrate import upgrade
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests._receiver import receiving
from tests._store import flow_runs
from tests.runtime._workers import Worker


def test_a_failed_direct_call_notifies_without_waiting_for_the_receiver(
    default_store: str,
) -> None:
    with receiving(fail_first=2) as receiver:
        notifier = WebhookNotifier(receiver.url, backoff=1.0, ui_url="http://ui.example")

        @flow(name="nightly-report", on_failure=[notifier])
        def nightly_report(day: str) -> None:
            raise RuntimeError(f"no data for {day}")

        @flow(name="fine-report", on_failure=[notifier])
        def fine_report() -> str:
            return "ok"

        assert fine_report() == "ok"
        state = nightly_report("2026-11-24", return_state=True)
        # the run did not wait for the 503s and the backoff (>= 1 s) before the one delivery
        assert notifier.sent == 0
        assert state.is_failed()
        notifier.close(timeout=30)
    assert receiver.attempts == 3 and notifier.sent == 1 and notifier.failed == 0
    [body] = receiver.bodies
    assert "*nightly-report*" in body["text"] and "no data for 2026-11-24" in body["text"]
    assert body["eventflow"]["flow_run_id"] == state.run_id
    assert body["eventflow"]["url"] == f"http://ui.example/#/runs/{state.run_id}"


def test_a_refusing_receiver_is_not_retried_and_a_dead_one_is_given_up_on() -> None:
    with receiving(fail_first=10, fail_status=400) as receiver:
        refused = WebhookNotifier(receiver.url, retries=3, backoff=0.01)
        refused.notify(Notification("f", "run-1", None, "FAILED", "Failed", "boom"))
        refused.close(timeout=10)
        assert receiver.attempts == 1 and refused.failed == 1 and refused.sent == 0
        gone = receiver.url
    dead = WebhookNotifier(gone, retries=2, backoff=0.01, timeout=1)  # nothing listens any more
    dead.notify(Notification("f", "run-2", None, "CRASHED", "Crashed", None))
    dead.close(timeout=10)
    assert dead.failed == 1 and dead.sent == 0


@pytest.mark.kafka
@pytest.mark.slow(16)
async def test_runs_of_a_killed_worker_are_notified_as_crashed_once(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    topic = f"crash-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    orders = [
        (f"c{i % 40}", orjson.dumps({"id": f"o{i}", "customer_id": f"c{i % 40}", "amount": i}))
        for i in range(200)
    ]
    await produce(kafka.bootstrap, topic, orders)
    upgrade(sqlite_url)  # the store exists before the test reads it
    with receiving() as receiver:
        env = {
            "EVENTFLOW_DATABASE_URL": sqlite_url,
            "EVENTFLOW_WORKER_LEASE": "2",
            "EVENTFLOW_METRICS_PORT": "0",
            "BOOTSTRAP": kafka.bootstrap,
            "TOPIC": topic,
            "GROUP": f"g-{topic}",
            "WORK_SECONDS": "5",  # every run is still in flight when the worker dies
            "NOTIFY_URL": receiver.url,
        }
        first = Worker(env, tmp_path / "first.log")
        try:
            await wait_until(lambda: _running(sqlite_url, 20), timeout=60)
            first.kill()
            second = Worker({**env, "WORK_SECONDS": "0"}, tmp_path / "second.log")
            crashed = await wait_until(lambda: _crashed(sqlite_url), timeout=60)
            await wait_until(lambda: len(receiver.bodies) >= len(crashed), timeout=30)
            assert second.terminate() == 0
        finally:
            Worker.kill_all()
    notified = [b["eventflow"] for b in receiver.bodies]
    assert sorted(n["flow_run_id"] for n in notified) == sorted(r["id"] for r in crashed)
    assert {n["state"] for n in notified} == {"CRASHED"}
    assert all(n["event_key"] for n in notified)


async def _running(url: str, at_least: int) -> bool:
    return len(await flow_runs(url, state_type="RUNNING")) >= at_least


async def _crashed(url: str) -> list[dict[str, object]]:
    return await flow_runs(url, state_type="CRASHED")


def test_a_body_that_cannot_be_built_fails_alone_and_the_sender_goes_on() -> None:
    def body(n: Notification) -> dict[str, object]:
        if n.flow_run_id == "run-bad":
            raise ValueError("cannot format this one")
        return {"text": n.flow_run_id, "not-json": None}

    with receiving() as receiver:
        notifier = WebhookNotifier(receiver.url, body=body)
        notifier.notify(Notification("f", "run-bad", None, "FAILED", "Failed", "x"))
        notifier.notify(Notification("f", "run-ok", None, "FAILED", "Failed", "y"))
        notifier.close(timeout=10)
    assert [b["text"] for b in receiver.bodies] == ["run-ok"]
    assert (notifier.failed, notifier.sent) == (1, 1)
