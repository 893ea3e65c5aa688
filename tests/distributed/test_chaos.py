"""The chaos soak (tests/distributed/chaos.py), three minutes of it; `scripts/chaos` runs longer."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._kafka import Kafka
from tests._services import Postgres
from tests.distributed.chaos import soak
from tests.runtime._workers import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(480)]


@pytest.fixture
def own_services() -> Iterator[tuple[Kafka, Postgres]]:
    """A broker and a server this test alone bounces (not the session's)."""
    kafka, postgres = Kafka.start_new(), Postgres.start_new()
    try:
        yield kafka, postgres
    finally:
        Worker.kill_all()
        kafka.remove()
        postgres.remove()


@pytest.mark.slow(330)
async def test_chaos_soak(own_services: tuple[Kafka, Postgres], tmp_path: Path) -> None:
    kafka, postgres = own_services
    seed = int(os.environ.get("EVENTFLOW_CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"chaos seed {seed} (EVENTFLOW_CHAOS_SEED={seed} reruns its choices)")
    report, log = await soak(
        kafka, postgres, tmp_path, seconds=150, seed=seed, workers=3, rate=70, events=10_500
    )
    assert not report.violations(), f"seed {seed}\n" + "\n".join(log)
