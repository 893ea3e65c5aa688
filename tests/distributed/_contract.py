"""The contract of issue 21, checked from the real store while workers run and at the end.

1. A final state is final: no run that reached COMPLETED, FAILED, CRASHED or
   CANCELLED changes afterwards.
2. At most one COMPLETED run per (group, topic, partition, offset); runs made by
   an operator (`retry_of` set: a retry or a replay) do not count.
3. A stored offset (`consumer_offsets.next_offset`) never moves backwards.
4. Per key, COMPLETED runs end in offset order.
5. A worker that lost its claim writes nothing more under it: no task run of a
   finished flow run starts after that run ended, nor changes after its own end.
And at the end: every event of the input topic has exactly one COMPLETED run.

Two witnesses, so that nothing depends on when a poll happened to look:
- triggers installed in the store (`install_audit`) record every change to a
  final run or task run and every backward move of an offset, in the same
  transaction as the write (a row change cannot escape them);
- a `Watcher` polls the store during the test (offsets every 0.2 s, final
  states every second), remembering each run's first final state and each
  offset's last value, as an outside observer of what readers saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventflow._store._engine import is_sqlite, make_engine
from eventflow._store._migrate import upgrade

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
_FINAL_SQL = ", ".join(f"'{s}'" for s in FINAL)
_CHANGED = (
    "(NEW.state_type IS DISTINCT FROM OLD.state_type OR NEW.ended_at IS DISTINCT FROM OLD.ended_at"
    " OR NEW.result IS DISTINCT FROM OLD.result OR NEW.error IS DISTINCT FROM OLD.error)"
)
_FLOW_RUN_CHANGED = f"{_CHANGED[:-1]} OR NEW.worker_id IS DISTINCT FROM OLD.worker_id)"
_SQLITE_CHANGED = _CHANGED.replace("IS DISTINCT FROM", "IS NOT")
_SQLITE_FLOW_RUN_CHANGED = _FLOW_RUN_CHANGED.replace("IS DISTINCT FROM", "IS NOT")

_PG_AUDIT = [
    "CREATE TABLE IF NOT EXISTS contract_audit (id bigserial PRIMARY KEY, kind text NOT NULL,"
    " row_key text NOT NULL, before text, after text,"
    " at double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()))",
    "CREATE OR REPLACE FUNCTION contract_run_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO contract_audit (kind, row_key, before, after) VALUES (TG_ARGV[0], OLD.id,"
    " concat_ws(' ', OLD.state_type, OLD.ended_at), concat_ws(' ', NEW.state_type, NEW.ended_at));"
    " RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION contract_run_deleted() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO contract_audit (kind, row_key, before) VALUES (TG_ARGV[0], OLD.id,"
    " OLD.state_type); RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION contract_offset_back() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN INSERT INTO contract_audit (kind, row_key, before, after) VALUES ('offset_backwards',"
    " concat_ws('/', OLD.group_id, OLD.topic, OLD.partition), OLD.next_offset, NEW.next_offset);"
    " RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS contract_flow_run_final ON flow_runs",
    "CREATE TRIGGER contract_flow_run_final AFTER UPDATE ON flow_runs FOR EACH ROW"
    f" WHEN (OLD.state_type IN ({_FINAL_SQL}) AND {_FLOW_RUN_CHANGED})"
    " EXECUTE FUNCTION contract_run_changed('flow_run_changed')",
    "DROP TRIGGER IF EXISTS contract_flow_run_deleted ON flow_runs",
    "CREATE TRIGGER contract_flow_run_deleted AFTER DELETE ON flow_runs FOR EACH ROW"
    " EXECUTE FUNCTION contract_run_deleted('flow_run_deleted')",
    "DROP TRIGGER IF EXISTS contract_task_run_final ON task_runs",
    "CREATE TRIGGER contract_task_run_final AFTER UPDATE ON task_runs FOR EACH ROW"
    f" WHEN (OLD.state_type IN ({_FINAL_SQL}) AND {_CHANGED})"
    " EXECUTE FUNCTION contract_run_changed('task_run_changed')",
    "DROP TRIGGER IF EXISTS contract_offset_backwards ON consumer_offsets",
    "CREATE TRIGGER contract_offset_backwards AFTER UPDATE ON consumer_offsets FOR EACH ROW"
    " WHEN (NEW.next_offset < OLD.next_offset) EXECUTE FUNCTION contract_offset_back()",
]

_SQLITE_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_SQLITE_AUDIT = [
    "CREATE TABLE IF NOT EXISTS contract_audit (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    f" kind TEXT NOT NULL, row_key TEXT NOT NULL, before TEXT, after TEXT, at REAL NOT NULL"
    f" DEFAULT {_SQLITE_NOW})",
    "DROP TRIGGER IF EXISTS contract_flow_run_final",
    "CREATE TRIGGER contract_flow_run_final AFTER UPDATE ON flow_runs FOR EACH ROW"
    f" WHEN OLD.state_type IN ({_FINAL_SQL}) AND {_SQLITE_FLOW_RUN_CHANGED}"
    " BEGIN INSERT INTO contract_audit (kind, row_key, before, after) VALUES ('flow_run_changed',"
    " OLD.id, OLD.state_type || ' ' || ifnull(OLD.ended_at, ''),"
    " NEW.state_type || ' ' || ifnull(NEW.ended_at, '')); END",
    "DROP TRIGGER IF EXISTS contract_flow_run_deleted",
    "CREATE TRIGGER contract_flow_run_deleted AFTER DELETE ON flow_runs FOR EACH ROW"
    " BEGIN INSERT INTO contract_audit (kind, row_key, before) VALUES ('flow_run_deleted',"
    " OLD.id, OLD.state_type); END",
    "DROP TRIGGER IF EXISTS contract_task_run_final",
    "CREATE TRIGGER contract_task_run_final AFTER UPDATE ON task_runs FOR EACH ROW"
    f" WHEN OLD.state_type IN ({_FINAL_SQL}) AND {_SQLITE_CHANGED}"
    " BEGIN INSERT INTO contract_audit (kind, row_key, before, after) VALUES ('task_run_changed',"
    " OLD.id, OLD.state_type || ' ' || ifnull(OLD.ended_at, ''),"
    " NEW.state_type || ' ' || ifnull(NEW.ended_at, '')); END",
    "DROP TRIGGER IF EXISTS contract_offset_backwards",
    "CREATE TRIGGER contract_offset_backwards AFTER UPDATE ON consumer_offsets FOR EACH ROW"
    " WHEN NEW.next_offset < OLD.next_offset BEGIN INSERT INTO contract_audit"
    " (kind, row_key, before, after) VALUES ('offset_backwards',"
    " OLD.group_id || '/' || OLD.topic || '/' || OLD.partition, OLD.next_offset,"
    " NEW.next_offset); END",
]


async def install_audit(url: str) -> None:
    """Create the store's schema (the code under test's head) and the contract's triggers.

    Run before any worker starts: a worker then finds the schema current and
    migrates nothing (a SQLite migration copying a table would drop its triggers).
    """
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in _SQLITE_AUDIT if is_sqlite(url) else _PG_AUDIT:
                await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@dataclass
class OffsetMove:
    """A stored offset seen lower than before: (group, topic, partition), from, to, when."""

    partition: tuple[str, str, int]
    before: int
    after: int
    at: float


@dataclass
class Watcher:
    """Polls the store while the test runs: each run's first final state, each offset's moves.

    Errors (the database restarted by the test) are counted and polling goes on.
    """

    url: str
    offset_interval: float = 0.2
    runs_interval: float = 1.0
    first_final: dict[str, tuple[str, Any]] = field(default_factory=dict)
    final_changes: dict[str, tuple[str, str]] = field(default_factory=dict)
    last: dict[tuple[str, str, int], int] = field(default_factory=dict)
    backwards: list[OffsetMove] = field(default_factory=list)
    completed_timeline: list[tuple[float, int]] = field(default_factory=list)
    errors: int = 0
    polls: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling, after one last look at everything."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        engine = make_engine(self.url)
        try:
            async with engine.connect() as conn:
                await self._poll_offsets(conn)
                await self._poll_runs(conn)
        finally:
            await engine.dispose()

    def summary(self) -> str:
        return (
            f"watcher: {self.polls} polls, {self.errors} errors, saw {len(self.final_changes)}"
            f" final states change and {len(self.backwards)} offsets move back"
        )

    async def _run(self) -> None:
        engine = make_engine(self.url, statement_timeout=10)
        next_runs = 0.0
        try:
            while True:
                try:
                    async with engine.connect() as conn:
                        while True:
                            await self._poll_offsets(conn)
                            if time.monotonic() >= next_runs:
                                await self._poll_runs(conn)
                                next_runs = time.monotonic() + self.runs_interval
                            await conn.rollback()  # a fresh snapshot each time (SQLite WAL)
                            self.polls += 1
                            await asyncio.sleep(self.offset_interval)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store is down or restarting: look again soon
                    self.errors += 1
                    await asyncio.sleep(0.5)
        finally:
            await engine.dispose()

    async def _poll_offsets(self, conn: Any) -> None:
        result = await conn.exec_driver_sql(
            "SELECT group_id, topic, partition, next_offset FROM consumer_offsets"
        )
        now = time.time()
        for group, topic, partition, offset in result.all():
            key, offset = (str(group), str(topic), int(partition)), int(offset)
            previous = self.last.get(key)
            if previous is not None and offset < previous:
                self.backwards.append(OffsetMove(key, previous, offset, now))
            self.last[key] = offset

    async def _poll_runs(self, conn: Any) -> None:
        result = await conn.exec_driver_sql(
            f"SELECT id, state_type, ended_at FROM flow_runs WHERE state_type IN ({_FINAL_SQL})"
        )
        completed = 0
        seen: set[str] = set()
        for run_id, state, ended in result.all():
            seen.add(run_id)
            completed += state == "COMPLETED"
            first = self.first_final.get(run_id)
            if first is None:
                self.first_final[run_id] = (state, ended)
            elif first[0] != state and run_id not in self.final_changes:
                self.final_changes[run_id] = (first[0], state)
        for run_id, (state, _) in self.first_final.items():
            if run_id not in seen and run_id not in self.final_changes:
                self.final_changes[run_id] = (state, "not final any more")
        self.completed_timeline.append((time.time(), completed))


async def input_positions(bootstrap: str, topic: str) -> dict[tuple[int, int], str | None]:
    """Every event in `topic`: (partition, offset) -> its key, read back from the broker."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        positions: dict[tuple[int, int], str | None] = {}
        ends: dict[TopicPartition, int] | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    key = record.key.decode() if record.key is not None else None
                    positions[(tp.partition, record.offset)] = key
            if ends is None and consumer.assignment():
                # a group-less consumer gets every partition at once
                ends = await consumer.end_offsets(list(consumer.assignment()))
            if ends is not None and all(
                (tp.partition, end - 1) in positions for tp, end in ends.items() if end > 0
            ):
                return positions
        raise AssertionError(f"could not read {topic} back to its end in 120 s")
    finally:
        await consumer.stop()


@dataclass
class ContractReport:
    """What the store and the input topic say about each line of the contract."""

    events: int
    states: Counter[str]
    final_rewritten: list[str]  # line 1, as the store's triggers recorded it
    completed_twice: dict[tuple[int, int], int]  # line 2: position -> COMPLETED runs
    offsets_backwards: list[str]  # line 3, as the store's triggers recorded it
    order_inversions: list[str]  # line 4
    late_task_writes: list[str]  # line 5
    missing: list[tuple[int, int]]  # events without a COMPLETED run
    unknown: list[tuple[int, int]]  # COMPLETED runs of positions not in the topic
    key_overlaps: int  # same-key COMPLETED runs that overlapped in time (information)
    watcher: str  # what the watcher saw by itself, beside the triggers
    seen_final_changes: list[str] = field(default_factory=list)  # line 1, by the watcher
    seen_offsets_backwards: list[str] = field(default_factory=list)  # line 3, by the watcher
    empty_errors: list[str] = field(default_factory=list)  # line 6: logged errors saying nothing

    def violations(self) -> list[str]:
        found = []
        if self.final_rewritten or self.seen_final_changes:
            found.append(
                f"line 1: {len(self.final_rewritten)} final states changed"
                f" (the watcher saw {len(self.seen_final_changes)})"
            )
        if self.completed_twice:
            found.append(f"line 2: {len(self.completed_twice)} events with several COMPLETED runs")
        if self.offsets_backwards or self.seen_offsets_backwards:
            found.append(
                f"line 3: {len(self.offsets_backwards)} offset moves backwards"
                f" (the watcher saw {len(self.seen_offsets_backwards)})"
            )
        if self.order_inversions:
            found.append(f"line 4: {len(self.order_inversions)} per-key order inversions")
        if self.late_task_writes:
            found.append(f"line 5: {len(self.late_task_writes)} task writes under a finished run")
        if self.empty_errors:
            found.append(f"line 6: {len(self.empty_errors)} logged errors with an empty message")
        if self.missing:
            found.append(f"{len(self.missing)} of {self.events} events without a COMPLETED run")
        if self.unknown:
            found.append(f"{len(self.unknown)} COMPLETED runs of events not in the topic")
        return found

    def summary(self) -> str:
        lines = [
            f"events {self.events}; runs by state {dict(self.states)}; "
            f"same-key overlaps {self.key_overlaps}; {self.watcher}",
            *(self.violations() or ["contract holds"]),
        ]
        for title, items in (
            ("final states changed", self.final_rewritten),
            ("completed twice", [f"{p}: {n}" for p, n in list(self.completed_twice.items())]),
            ("offsets backwards", self.offsets_backwards),
            ("the watcher saw final states change", self.seen_final_changes),
            ("the watcher saw offsets move back", self.seen_offsets_backwards),
            ("order inversions", self.order_inversions),
            ("late task writes", self.late_task_writes),
            ("missing", [str(p) for p in self.missing]),
            ("empty errors", self.empty_errors),
        ):
            if items:
                lines.append(f"  {title} (first 8 of {len(items)}): {'; '.join(items[:8])}")
        return "\n".join(lines)

    def assert_holds(self) -> None:
        assert not self.violations(), self.summary()


_EMPTY_ERROR = re.compile(r"\| (WARNING|ERROR) +\|.*:\s*($|;)")
"""A log line whose error says nothing: `crash sweep failed: `, `TimeoutError: ; retrying`."""


def empty_errors(logs: Iterable[Path]) -> list[str]:
    """The WARNING and ERROR lines of these logs that end where the error should be."""
    found = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if _EMPTY_ERROR.search(line):
                found.append(f"{log.name}: {line.strip()}")
    return found


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


async def check_contract(
    url: str, bootstrap: str, topic: str, group: str, watcher: Watcher | None = None
) -> ContractReport:
    """Read the store and the input topic; each contract line's findings."""
    positions = await input_positions(bootstrap, topic)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            epoch = "{}" if is_sqlite(url) else "extract(epoch FROM {})"
            runs = (
                await conn.execute(
                    sa.text(
                        "SELECT id, state_type, event_partition, event_offset, event_key, "
                        f"{epoch.format('started_at')}, {epoch.format('ended_at')}, retry_of "
                        "FROM flow_runs WHERE event_source = :topic AND event_group = :group"
                    ),
                    {"topic": topic, "group": group},
                )
            ).all()
            audit: list[tuple[str, str, Any, Any, float]] = (
                await conn.exec_driver_sql(
                    "SELECT kind, row_key, before, after, at FROM contract_audit ORDER BY id"
                )
            ).all()  # type: ignore[assignment]
            late: list[tuple[str, str, str]] = (
                await conn.exec_driver_sql(
                    "SELECT t.id, t.task_name, f.id FROM task_runs t JOIN flow_runs f"
                    " ON t.flow_run_id = f.id WHERE f.state_type IN"
                    f" ({_FINAL_SQL}) AND t.started_at > f.ended_at"
                )
            ).all()  # type: ignore[assignment]
    finally:
        await engine.dispose()

    states = Counter(str(r[1]) for r in runs)
    completed: dict[tuple[int, int], list[tuple[Any, ...]]] = defaultdict(list)
    for run in runs:
        if run[1] == "COMPLETED" and run[7] is None:
            completed[(int(run[2]), int(run[3]))].append(run)
    twice = {pos: len(rs) for pos, rs in completed.items() if len(rs) > 1}

    rewritten = [
        f"{kind} {key}: {before} -> {after}"
        for kind, key, before, after, _ in audit
        if kind in ("flow_run_changed", "flow_run_deleted")
    ]
    backwards = [
        f"{key}: {before} -> {after}"
        for kind, key, before, after, _ in audit
        if kind == "offset_backwards"
    ]
    late_writes = [
        f"task run {t} ({name}) of run {f} started after it ended" for t, name, f in late
    ]
    late_writes += [
        f"{kind} {key}: {before} -> {after}"
        for kind, key, before, after, _ in audit
        if kind == "task_run_changed"
    ]
    seen_changes, seen_backwards = [], []
    if watcher is not None:
        seen_changes = [f"{rid}: {a} -> {b}" for rid, (a, b) in watcher.final_changes.items()]
        seen_backwards = [
            f"{'/'.join(map(str, m.partition))}: {m.before} -> {m.after}" for m in watcher.backwards
        ]

    inversions, overlaps = _order(completed.values())
    return ContractReport(
        events=len(positions),
        states=states,
        final_rewritten=rewritten,
        completed_twice=twice,
        offsets_backwards=backwards,
        order_inversions=inversions,
        late_task_writes=late_writes,
        missing=sorted(set(positions) - set(completed)),
        unknown=sorted(set(completed) - set(positions)),
        key_overlaps=overlaps,
        watcher=watcher.summary() if watcher is not None else "no watcher",
        seen_final_changes=seen_changes,
        seen_offsets_backwards=seen_backwards,
    )


def _order(completed: Iterable[list[tuple[Any, ...]]]) -> tuple[list[str], int]:
    """Per key, COMPLETED runs in offset order: those that ended before an earlier offset's."""
    by_key: dict[tuple[int, str], list[tuple[int, float, float]]] = defaultdict(list)
    for group in completed:
        for run in group:
            by_key[(int(run[2]), str(run[4]))].append((int(run[3]), _epoch(run[5]), _epoch(run[6])))
    inversions: list[str] = []
    overlaps = 0
    for (partition, key), runs in by_key.items():
        runs.sort()
        # the latest end among runs of lower offsets, and its offset
        latest_end, latest_offset = float("-inf"), -1
        for offset, offset_runs in itertools.groupby(runs, key=lambda r: r[0]):
            ends = []
            for _, started, ended in offset_runs:
                if ended < latest_end:
                    inversions.append(
                        f"key {key} p{partition}: offset {offset} ended "
                        f"{latest_end - ended:.2f}s before offset {latest_offset}"
                    )
                elif started < latest_end:
                    overlaps += 1
                ends.append(ended)
            if max(ends) > latest_end:
                latest_end, latest_offset = max(ends), offset
    return inversions, overlaps


def longest_gap(ends: Iterable[float], start: float, stop: float) -> float:
    """The longest time in [start, stop] with no run ending (ends: epoch seconds)."""
    points = sorted([start, *(e for e in ends if start <= e <= stop), stop])
    return max(b - a for a, b in itertools.pairwise(points)) if len(points) > 1 else 0.0
