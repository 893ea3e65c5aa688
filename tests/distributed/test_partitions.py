"""Network partitions between hosts (issue 21): each worker, the broker and PostgreSQL in
namespaces of their own on one bridge (tests/distributed/_netns.py); one worker cut off.

Cut from the broker only, from PostgreSQL only, from both, for 60 s each, then
healed: the contract holds and every event completes after the heal. A host
that vanishes mid-transaction (its link goes dark, then its processes die, and
it is back 2 minutes later) does not stop the other worker for longer than
`PAUSE_BOUND` seconds.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventflow._store._engine import make_engine
from tests._kafka import wait_until
from tests.distributed._contract import ContractReport, longest_gap
from tests.distributed._load import SteadyProducer
from tests.distributed._netns import Cluster, Host, entered
from tests.distributed._scenario import Scenario
from tests.runtime._workers import Worker

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.timeout(420),
    pytest.mark.skipif(
        shutil.which("nft") is None or shutil.which("ip") is None,
        reason="needs ip and nft (scripts/install)",
    ),
]

FENCING = pytest.mark.xfail(strict=False, reason="fencing (issue 21) not merged yet")
CUT_SECONDS = 60
VANISHED_SECONDS = 120
PAUSE_BOUND = 30.0
"""Longest time the live worker may complete nothing while another host vanished (s)."""
RATE = 30.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    started = Cluster.start(worker_hosts=2)
    try:
        yield started
    finally:
        Worker.kill_all()
        started.stop()


@pytest.fixture
def client_side(cluster: Cluster) -> Iterator[Cluster]:
    """The test itself runs on the cluster's client host (before any thread is started)."""
    with entered(cluster.client):
        yield cluster


async def _start(
    cluster: Cluster, tmp_path: Path, total: int
) -> tuple[Scenario, list[str], SteadyProducer]:
    url = await asyncio.to_thread(cluster.postgres.create_database)
    scenario = await Scenario.create(cluster.kafka.bootstrap, url, tmp_path)
    workers = [scenario.start_worker(h.short, prefix=h.prefix) for h in cluster.workers]
    ids = [await scenario.worker_id(w) for w in workers]
    producer = SteadyProducer(cluster.kafka.bootstrap, scenario.topic, total, RATE, keys=100)
    producer.start()

    async def first_busy() -> bool:
        return (
            await scenario.completed_positions() >= total // 10
            and await scenario.in_flight(ids[0]) >= 3
        )

    await wait_until(first_busy, timeout=120, interval=0.2)
    return scenario, ids, producer


async def _finish(scenario: Scenario, producer: SteadyProducer) -> ContractReport:
    await producer.wait(timeout=producer.total / RATE + 120)
    await scenario.wait_done(producer.sent, timeout=240)
    report = await scenario.finish()
    print(report.summary())
    return report


async def cut_and_heal(
    cluster: Cluster, tmp_path: Path, peers: Callable[[Cluster], Sequence[Host]]
) -> ContractReport:
    """Cut the first worker from `peers` for CUT_SECONDS mid-stream, heal, let all finish."""
    total = int(RATE * (CUT_SECONDS + 60))
    scenario, ids, producer = await _start(cluster, tmp_path, total)
    host = cluster.workers[0]
    in_flight = await scenario.in_flight(ids[0])
    host.cut(*peers(cluster))
    await asyncio.sleep(CUT_SECONDS)  # the length of the fault, not a synchronisation
    host.heal()
    healed_at = time.time()
    report = await _finish(scenario, producer)
    # it rejoined: it completed runs again after the heal
    after = await scenario.completed_by(ids[0], healed_at)
    print(f"cut with {in_flight} runs in flight; after the heal it completed runs of {after}")
    return report


@FENCING
@pytest.mark.slow(200)
async def test_cut_from_the_broker_only(client_side: Cluster, tmp_path: Path) -> None:
    report = await cut_and_heal(client_side, tmp_path, lambda c: [c.kafka.host])
    report.assert_holds()


@FENCING
@pytest.mark.slow(200)
async def test_cut_from_postgres_only(client_side: Cluster, tmp_path: Path) -> None:
    report = await cut_and_heal(client_side, tmp_path, lambda c: [c.postgres.host])
    report.assert_holds()


@FENCING
@pytest.mark.slow(200)
async def test_cut_from_both_then_healed(client_side: Cluster, tmp_path: Path) -> None:
    report = await cut_and_heal(client_side, tmp_path, lambda c: [c.kafka.host, c.postgres.host])
    report.assert_holds()


async def _holding_offset_locks(url: str, address: str, timeout: float) -> bool:
    """Until a transaction of `address` holds a lock on consumer_offsets (it wrote there)."""
    engine = make_engine(url)
    query = sa.text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE a.client_addr = CAST(:address AS inet)"
        " AND l.relation = CAST('consumer_offsets' AS regclass)"
    )
    deadline = time.monotonic() + timeout
    try:
        async with engine.connect() as conn:
            while time.monotonic() < deadline:
                if (await conn.execute(query, {"address": address})).scalar_one():
                    return True
                await conn.rollback()
                await asyncio.sleep(0.005)
    finally:
        await engine.dispose()
    return False


@FENCING
@pytest.mark.slow(330)
async def test_a_vanished_host_does_not_stop_the_others(
    client_side: Cluster, tmp_path: Path
) -> None:
    """The worst moment: its link first slows (each round trip 100 ms), then goes dark
    while its transaction holds locks on stored offsets; then its processes die."""
    cluster = client_side
    total = int(RATE * (VANISHED_SECONDS + 60))
    scenario, ids, producer = await _start(cluster, tmp_path, total)
    host, live = cluster.workers[0], ids[1:]
    host.slow(100)
    mid_transaction = await _holding_offset_locks(scenario.url, host.address, timeout=60)
    host.cut(*cluster.everyone_but(host))
    gone_at = time.time()
    scenario.workers[host.short].signal_group(signal.SIGKILL)
    await asyncio.sleep(VANISHED_SECONDS)  # how long the host stays away
    host.heal()
    scenario.start_worker(host.short, prefix=host.prefix)  # the host is back
    report = await _finish(scenario, producer)
    gap = longest_gap(await scenario.ends_by(live), gone_at, gone_at + VANISHED_SECONDS)
    print(
        f"vanished mid-transaction: {mid_transaction}; the live worker's longest pause while"
        f" it was away: {gap:.1f}s (bound {PAUSE_BOUND}s)"
    )
    assert gap <= PAUSE_BOUND, f"the live worker completed nothing for {gap:.1f}s"
    report.assert_holds()
