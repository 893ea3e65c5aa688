"""WebhookNotifier as a flow hook: a real receiver on loopback, retries, no waiting."""

from __future__ import annotations

import time

from eventflow import Notification, WebhookNotifier, flow
from tests._receiver import receiving


def test_a_failed_direct_call_notifies_without_waiting_for_the_receiver(
    default_store: str,
) -> None:
    with receiving(fail_first=2) as receiver:
        notifier = WebhookNotifier(receiver.url, backoff=0.2, ui_url="http://ui.example")

        @flow(name="nightly-report", on_failure=[notifier])
        def nightly_report(day: str) -> None:
            raise RuntimeError(f"no data for {day}")

        @flow(name="fine-report", on_failure=[notifier])
        def fine_report() -> str:
            return "ok"

        assert fine_report() == "ok"
        started = time.monotonic()
        state = nightly_report("2026-11-24", return_state=True)
        assert time.monotonic() - started < 0.2  # the run did not wait for the 503s and backoff
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
