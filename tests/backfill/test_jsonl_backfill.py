"""Backfills over a JSONL file: one tracked run per line, failures reported, resumable."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson
import pydantic

from connectors.jsonl import JsonlSource
from eventflow import BackfillProgress, Settings, backfill_async, flow
from eventflow._store import _schema as schema
from tests._store import flow_runs, rows


class Order(pydantic.BaseModel):
    id: str
    amount: int


@flow(name="bf-order")
async def load_order(order: Order) -> int:
    await asyncio.sleep(0.001)
    return order.amount


def settings(url: str) -> Settings:
    return Settings(database_url=url, flush_interval=0.02, commit_interval=0.2)


def write_orders(path: Path, count: int, bad: dict[int, bytes] | None = None) -> None:
    """`count` lines of orders (line n is order n), some replaced by `bad` lines; one blank line."""
    lines = [orjson.dumps({"id": f"o{n}", "amount": n}) for n in range(1, count + 1)]
    for number, line in (bad or {}).items():
        lines[number - 1] = line
    path.write_bytes(b"\n".join(lines) + b"\n\n")


async def test_every_line_becomes_exactly_one_run_and_bad_lines_fail(
    tmp_path: Path, sqlite_url: str
) -> None:
    bad = {
        17: b'{"id": "o17", "amount": ',  # not JSON
        500: b'{"id": "o500"}',  # amount missing
        2999: b'{"id": "o2999", "amount": "lots"}',
    }
    path = tmp_path / "orders.jsonl"
    write_orders(path, 3000, bad)
    dead = tmp_path / "dead.jsonl"
    seen: list[BackfillProgress] = []

    result = await backfill_async(
        load_order,
        JsonlSource(path),
        settings=settings(sqlite_url),
        dead_letter_path=dead,
        progress=seen.append,
    )

    assert (result.total, result.completed, result.failed) == (3000, 2997, 3)
    assert (result.already_done, result.skipped_duplicates, result.interrupted) == (0, 0, False)
    assert result.group_id == f"backfill:bf-order:jsonl:{path.resolve()}"
    assert sorted(f.offset for f in result.failures) == [17, 500, 2999]
    assert seen and seen[-1].total == 3000
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # progress only moves on

    runs = await flow_runs(sqlite_url)
    assert len(runs) == 3000
    assert Counter(r["event_offset"] for r in runs) == Counter(range(1, 3001))  # once per line
    assert {r["event_source"] for r in runs} == {"orders.jsonl"}
    failed = {r["event_offset"]: r for r in runs if r["state_type"] == "FAILED"}
    assert sorted(failed) == [17, 500, 2999]
    assert "Invalid JSON" in failed[17]["error"] and "amount" in failed[500]["error"]
    assert {r["result"] for r in runs if r["event_offset"] == 42} == {"42"}

    dead_letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert sorted(d["offset"] for d in dead_letters) == [17, 500, 2999]
    assert {d["run_id"] for d in dead_letters} == {r["id"] for r in failed.values()}
    assert next(d for d in dead_letters if d["offset"] == 500)["value"] == '{"id": "o500"}'
    (stored,) = await rows(sqlite_url, schema.consumer_offsets)
    assert stored["next_offset"] == 3001

    again = await backfill_async(load_order, JsonlSource(path), settings=settings(sqlite_url))
    assert (again.completed, again.failed, again.already_done) == (0, 0, 3000)
    assert len(await flow_runs(sqlite_url)) == 3000


async def test_an_interrupted_backfill_resumes_and_runs_no_line_twice(
    tmp_path: Path, sqlite_url: str
) -> None:
    path = tmp_path / "orders.jsonl"
    write_orders(path, 2000)
    stop = asyncio.Event()

    def stop_midway(progress: BackfillProgress) -> None:
        if progress.done >= 600:
            stop.set()

    first = await backfill_async(
        load_order,
        JsonlSource(path),
        settings=settings(sqlite_url),
        max_in_flight=50,
        progress=stop_midway,
        stop=stop,
    )
    assert first.interrupted
    assert 600 <= first.completed < 2000
    assert len(await flow_runs(sqlite_url)) == first.completed  # runs in flight finished

    second = await backfill_async(load_order, JsonlSource(path), settings=settings(sqlite_url))
    assert not second.interrupted
    # the stored offset covers the first pass (its runs in flight all finished before it stopped)
    assert second.already_done == first.completed
    assert first.completed + second.completed == 2000
    runs = await flow_runs(sqlite_url)
    assert Counter(r["event_offset"] for r in runs) == Counter(range(1, 2001))
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
