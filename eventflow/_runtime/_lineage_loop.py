"""A worker's part in lineage: declare its datasets, report their events, send late notices.

Every `EVENTFLOW_LINEAGE_INTERVAL` seconds, off the hot path: the time of the
last event each subscription received (which the runner keeps anyway) goes to
the store as one guarded UPDATE per dataset that moved, whatever the event
rate; a schedule's last completed tick is read from its runs. Then the worker
evaluates the whole graph, as any worker or the server can, and sends the
notices of the transitions it wins (`_store/_lineage.py`): one per dataset
turning late, one when it is fresh again, whatever the number of workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .._datasets import RECORDED, source_datasets
from .._errors import describe_error
from .._lineage import Edge, Graph, Impact, check_acyclic
from .._metrics import MetricsExporter
from .._notify import Notification
from .._store import _lineage as store
from ._liveness import Outage
from ._runner import SubscriptionRunner
from ._subscription import Notifier, Subscription

logger = logging.getLogger("eventflow.lineage")


def declared_edges(subscriptions: Sequence[Subscription]) -> list[Edge]:
    """What the subscriptions and their flows' `reads=` / `writes=` say, each edge with
    its expectation (the shortest, when two subscriptions say it twice)."""
    edges: dict[tuple[str, str, str], Edge] = {}

    def add(edge: Edge) -> None:
        key = (edge.flow, edge.dataset, edge.direction)
        known = edges.get(key)
        if (
            known is None
            or known.expect_seconds is None
            or (edge.expect_seconds is not None and edge.expect_seconds < known.expect_seconds)
        ):
            edges[key] = edge

    for sub in subscriptions:
        deadline = getattr(sub.source, "deadline", None) if schedule_rule(sub.source) else None
        expect = sub.expect_every if deadline is None else float(deadline)
        for dataset in source_datasets(sub.source):
            add(Edge(sub.flow.name, dataset, "reads", expect))
        for dataset in sub.flow.reads:
            add(Edge(sub.flow.name, dataset, "reads"))
        for dataset in sub.flow.writes:
            add(Edge(sub.flow.name, dataset, "writes", sub.flow.fresh_within.get(dataset)))
    return list(edges.values())


def check_declarations(subscriptions: Sequence[Subscription]) -> None:
    """ConfigurationError for a flow that is its own upstream (see `check_acyclic`)."""
    check_acyclic(declared_edges(subscriptions))


def schedule_rule(source: Any) -> store.DueRule | None:
    """A schedule's completion deadline as a rule for `due_at`, if it has one."""
    rule = getattr(source, "freshness_due", None)
    if rule is None or getattr(source, "deadline", None) is None:
        return None
    due: store.DueRule = rule
    return due


def schedule_rules(subscriptions: Sequence[Subscription]) -> dict[str, store.DueRule | None]:
    """The schedules among the sources, each with its deadline rule (None: no deadline)."""
    return {
        dataset: schedule_rule(sub.source)
        for sub in subscriptions
        if hasattr(sub.source, "freshness_due")
        for dataset in source_datasets(sub.source)
    }


class LineageLoop:
    """Declares this worker's lineage, then keeps its datasets' times and notices current."""

    def __init__(
        self,
        runners: Sequence[SubscriptionRunner],
        engine: AsyncEngine,
        *,
        interval: float,
        notifiers: Callable[[], list[Notifier]],
    ) -> None:
        self.runners = runners
        self.engine = engine
        self.interval = interval
        self.notifiers = notifiers
        self._touched: dict[str, float] = {}
        self._completed: dict[str, int] = {}
        self._positions: dict[str, int] = {}
        self.graph: Graph | None = None
        self.rounds = 0
        """Evaluations completed (tests wait for rounds, not for time)."""

    async def declare(self) -> None:
        subscriptions = [r.subscription for r in self.runners]
        RECORDED.forget()
        await store.declare(
            self.engine,
            declared_edges(subscriptions),
            {s.flow.name for s in subscriptions},
            schedule_rules(subscriptions),
        )

    async def run(self, exporter: MetricsExporter | None = None) -> None:
        outage = Outage("evaluating lineage in the run store")
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.evaluate(exporter)
            except Exception as error:  # the store is away: the next round tries again
                outage.failed(describe_error(error))
                outage.tick()
                continue
            outage.recovered()

    async def evaluate(self, exporter: MetricsExporter | None = None) -> Graph:
        """One round: new run-time edges, this worker's events, the graph, the notices."""
        written = RECORDED.take()
        if written:
            try:
                await store.add_edges(self.engine, [Edge(f, d, "writes") for f, d in written])
            except Exception:
                for flow, dataset in written:  # again next round
                    RECORDED.add(flow, dataset)
                raise
        for runner in self.runners:
            await self._report(runner)
        now = time.time()
        graph = await store.refreshed(self.engine, persist=True)
        self.graph = graph
        if exporter is not None:
            exporter.sync_datasets(graph, now)
        notifiers = self.notifiers()
        if notifiers:
            await self._notices(graph, now, notifiers)
        self.rounds += 1
        return graph

    async def _report(self, runner: SubscriptionRunner) -> None:
        source = runner.source
        datasets = source_datasets(source)
        rule = schedule_rule(source)
        if rule is not None:
            completed = runner.stats.completed
            if self._completed.get(runner.subscription.name) == completed:
                return
            self._completed[runner.subscription.name] = completed
            stream = getattr(source, "stream", source.name)
            at = await store.last_scheduled(self.engine, runner.flow.name, stream)
            if at is not None:
                for dataset in datasets:
                    await store.touch(self.engine, dataset, at, rule)
            return
        if len(datasets) > 1:  # one event time for several topics: by each one's positions
            moved = self._moved_topics(runner)
            for dataset in datasets:
                if dataset in moved:
                    await self._touch(dataset, time.time())
            return
        last = runner.stats.last_event_at
        if last is not None:
            for dataset in datasets:
                await self._touch(dataset, last)

    def _moved_topics(self, runner: SubscriptionRunner) -> set[str]:
        totals: dict[str, int] = {}
        for (topic, _partition), position in runner.source.positions().items():
            totals[f"kafka:{topic}"] = totals.get(f"kafka:{topic}", 0) + position
        moved = {
            d for d, total in totals.items() if d in self._positions and self._positions[d] != total
        }
        self._positions.update(totals)
        return moved

    async def _touch(self, dataset: str, at: float) -> None:
        if self._touched.get(dataset, 0.0) >= at:
            return
        await store.touch(self.engine, dataset, at)
        self._touched[dataset] = at

    async def _notices(self, graph: Graph, now: float, notifiers: list[Notifier]) -> None:
        for dataset in graph.datasets.values():
            if dataset.late(now) and dataset.late_since is None:
                if await store.turn_late(self.engine, dataset.name, now):
                    impact = graph.affected(dataset.name)
                    logger.warning(
                        "dataset %s is late; affected flows: %s",
                        dataset.name,
                        ", ".join(impact.flows) or "none",
                    )
                    _send(notifiers, late_notice(impact, dataset.due_at, dataset.expect_seconds))
            elif (
                not dataset.late(now)
                and dataset.late_since is not None
                and await store.turn_fresh(self.engine, dataset.name, now)
            ):
                impact = graph.affected(dataset.name)
                logger.info("dataset %s is fresh again", dataset.name)
                _send(notifiers, fresh_notice(impact, dataset.last_at))


def late_notice(impact: Impact, due_at: float | None, expect: float | None) -> Notification:
    since = "" if due_at is None else f" since {_iso(due_at)}"
    period = "" if expect is None else f" (expected within {expect:g}s)"
    return Notification(
        flow_name=impact.dataset,
        flow_run_id="",
        run_name=None,
        state="LATE",
        state_name="Late",
        error=f"dataset {impact.dataset} is late{since}{period}; affected flows: "
        + (", ".join(impact.flows) or "none"),
        dataset=impact.dataset,
        affected_flows=impact.flows,
        affected_datasets=impact.datasets,
    )


def fresh_notice(impact: Impact, last_at: float | None) -> Notification:
    at = "" if last_at is None else f" (last at {_iso(last_at)})"
    return Notification(
        flow_name=impact.dataset,
        flow_run_id="",
        run_name=None,
        state="FRESH",
        state_name="Fresh",
        error=f"dataset {impact.dataset} is fresh again{at}",
        dataset=impact.dataset,
        affected_flows=impact.flows,
        affected_datasets=impact.datasets,
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _send(notifiers: list[Notifier], notification: Notification) -> None:
    for notifier in notifiers:
        try:  # one notifier that raises must not hide the others' messages
            notifier.notify(notification)
        except Exception:
            logger.exception("notifier %r failed for dataset %s", notifier, notification.dataset)
