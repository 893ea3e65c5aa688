"""An App with one fast interval schedule, for `eventflow run --workers N` in the tests."""

from __future__ import annotations

import os
from datetime import datetime

from connectors.schedule import IntervalSchedule
from eventflow import App, flow


@flow(name="worker-tick")
async def worker_tick(scheduled_at: datetime) -> str:
    return scheduled_at.isoformat()


app = App()
app.subscribe(
    IntervalSchedule(
        float(os.environ.get("TICK_SECONDS", "0.2")), name="worker-ticks", lease_ttl=2
    ),
    worker_tick,
)
