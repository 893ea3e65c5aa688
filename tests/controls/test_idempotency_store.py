"""Idempotency claims in the store, on both databases: races, windows, stopped holders."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from eventflow._store import _schema as schema
from eventflow._store._engine import make_engine
from eventflow._store._idempotency import Claim, claim_key, claim_keys
from eventflow._store._migrate import upgrade
from eventflow._store._retention import prune
from eventflow._store._writer import RunWriter

WINDOW = 3600.0


async def add_worker(url: str, worker_id: str, stopped: bool = False) -> None:
    engine = make_engine(url)
    now = time.time()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                schema.workers.insert().values(
                    id=worker_id,
                    hostname="h",
                    pid=1,
                    started_at=now,
                    heartbeat_at=now,
                    stopped_at=now if stopped else None,
                )
            )
    finally:
        await engine.dispose()


async def test_one_claim_wins_a_race_and_settling_makes_later_ones_duplicates(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade, database_url)
    await add_worker(database_url, "w1")
    await add_worker(database_url, "w2")
    engines = [make_engine(database_url) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(
                claim_key(engines[i % 2], "f", "order-1", f"run{i}", f"w{i % 2 + 1}", WINDOW)
                for i in range(8)
            )
        )
        claimed = [r for r in results if r.outcome == "claimed"]
        assert len(claimed) == 1
        winner = claimed[0].run_id
        assert sorted(r.outcome for r in results) == ["busy"] * 7 + ["claimed"]
        assert {r.run_id for r in results} == {winner}  # the losers name the holder

        writer = RunWriter(database_url)
        await asyncio.to_thread(writer.start)
        # a stale settlement (not the holder) changes nothing
        writer.put_idempotency(
            {"flow_name": "f", "key": "order-1", "run_id": "other", "state": "RELEASED",
             "completed_at": None}
        )  # fmt: skip
        await writer.flush()
        assert (await claim_key(engines[0], "f", "order-1", "x", "w1", WINDOW)).outcome == "busy"
        writer.put_idempotency(
            {"flow_name": "f", "key": "order-1", "run_id": winner, "state": "COMPLETED",
             "completed_at": time.time()}
        )  # fmt: skip
        await writer.flush()
        await asyncio.to_thread(writer.close)
        assert await claim_key(engines[1], "f", "order-1", "y", "w2", WINDOW) == Claim(
            "duplicate", winner
        )
        # the window is per flow and per key
        assert (await claim_key(engines[1], "g", "order-1", "z", "w2", WINDOW)).outcome == "claimed"
        # after the window the key runs again
        later = time.time() + WINDOW + 1
        assert await claim_key(
            engines[0], "f", "order-1", "late", "w1", WINDOW, now=later
        ) == Claim("claimed", "late")
    finally:
        for engine in engines:
            await engine.dispose()


async def test_released_and_orphaned_claims_are_taken_over(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    await add_worker(database_url, "alive")
    await add_worker(database_url, "dead", stopped=True)
    engine = make_engine(database_url)
    writer = RunWriter(database_url)
    await asyncio.to_thread(writer.start)
    try:
        # a failed run released its claim: the next event with the key runs
        assert (await claim_key(engine, "f", "k1", "r1", "alive", WINDOW)).outcome == "claimed"
        writer.put_idempotency(
            {"flow_name": "f", "key": "k1", "run_id": "r1", "state": "RELEASED",
             "completed_at": None}
        )  # fmt: skip
        await writer.flush()
        assert await claim_key(engine, "f", "k1", "r2", "alive", WINDOW) == Claim("claimed", "r2")

        # a stopped worker's claim whose run never finished: taken over
        assert (await claim_key(engine, "f", "k2", "r3", "dead", WINDOW)).outcome == "claimed"
        assert await claim_key(engine, "f", "k2", "r4", "alive", WINDOW) == Claim("claimed", "r4")

        # a stopped worker's claim whose run completed (settlement lost): a duplicate
        assert (await claim_key(engine, "f", "k3", "r5", "dead", WINDOW)).outcome == "claimed"
        now = time.time()
        writer.put_flow_run(
            {"id": "r5", "flow_name": "f", "state_type": "COMPLETED", "state_name": "Completed",
             "run_count": 1, "created_at": now, "started_at": now, "ended_at": now}
        )  # fmt: skip
        await writer.flush()
        assert await claim_key(engine, "f", "k3", "r6", "alive", WINDOW) == Claim("duplicate", "r5")
        async with engine.connect() as conn:
            states = dict(
                (
                    await conn.execute(
                        sa.select(schema.idempotency_keys.c.key, schema.idempotency_keys.c.run_id)
                    )
                ).all()
            )
        assert states == {"k1": "r2", "k2": "r4", "k3": "r5"}
    finally:
        await asyncio.to_thread(writer.close)
        await engine.dispose()


async def test_many_claims_in_one_transaction(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    await add_worker(database_url, "w1")
    engine = make_engine(database_url)
    try:
        assert (await claim_key(engine, "f", "k0", "old", "w1", WINDOW)).outcome == "claimed"
        requests = [(f"k{i % 600}", f"r{i}") for i in range(1200)]  # over one chunk of keys
        claims = await claim_keys(engine, "f", requests, "w1", WINDOW)
        assert claims["r0"] == Claim("busy", "old")  # k0 was held already
        assert claims["r600"] == Claim("busy", "old")
        for i in range(1, 600):
            assert claims[f"r{i}"] == Claim("claimed", f"r{i}")
            assert claims[f"r{i + 600}"] == Claim("busy", f"r{i}")  # behind the first request
    finally:
        await engine.dispose()


async def test_retention_prunes_settled_claims_only(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    await add_worker(database_url, "w1")
    engine = make_engine(database_url)
    writer = RunWriter(database_url)
    await asyncio.to_thread(writer.start)
    try:
        for key in ("done", "released", "running"):
            assert (
                await claim_key(engine, "f", key, f"r-{key}", "w1", WINDOW)
            ).outcome == "claimed"
        writer.put_idempotency(
            {"flow_name": "f", "key": "done", "run_id": "r-done", "state": "COMPLETED",
             "completed_at": time.time()}
        )  # fmt: skip
        writer.put_idempotency(
            {"flow_name": "f", "key": "released", "run_id": "r-released", "state": "RELEASED",
             "completed_at": None}
        )  # fmt: skip
        await writer.flush()
        await prune(engine, time.time() - 60)  # nothing is that old yet
        async with engine.connect() as conn:
            keys = (await conn.execute(sa.select(schema.idempotency_keys.c.key))).scalars().all()
        assert sorted(keys) == ["done", "released", "running"]
        await prune(engine, time.time() + 60)
        async with engine.connect() as conn:
            keys = (await conn.execute(sa.select(schema.idempotency_keys.c.key))).scalars().all()
        assert keys == ["running"]  # a run in flight keeps its claim
    finally:
        await asyncio.to_thread(writer.close)
        await engine.dispose()
