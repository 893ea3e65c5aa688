"""The dead-worker sweep's report: each notifier is told of each crashed run, whatever
another notifier does (one that raised hid the rest of the report)."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from eventflow import Notification
from eventflow._runtime._housekeeping import Housekeeping
from eventflow._store._recovery import CrashedRun, Sweep


class Broken:
    def notify(self, notification: Notification) -> None:
        raise RuntimeError("webhook misconfigured")

    def close(self, timeout: float = 10.0) -> None:
        pass


class Kept:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def notify(self, notification: Notification) -> None:
        self.seen.append(notification.flow_run_id)

    def close(self, timeout: float = 10.0) -> None:
        pass


def test_a_raising_notifier_does_not_hide_the_others_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kept = Kept()
    notifiers = [Broken(), kept]
    nothing = cast(Any, None)  # the report reads none of the worker's parts
    housekeeping = Housekeeping(
        [],
        writer=nothing,
        store=nothing,
        worker_id="w-alive",
        settings=nothing,
        health=nothing,
        notifiers=lambda _flow: list(notifiers),
    )
    runs = [CrashedRun(f"run-{i}", "orders", None, f"e{i}", "k") for i in range(3)]
    with caplog.at_level(logging.ERROR, logger="eventflow.runtime"):
        housekeeping.report_sweep(Sweep(["w-dead"], runs))
    assert kept.seen == ["run-0", "run-1", "run-2"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(" failed for crashed run ")[1] for r in failures] == [
        "run-0",
        "run-1",
        "run-2",
    ]
    assert all(r.exc_info for r in failures)
