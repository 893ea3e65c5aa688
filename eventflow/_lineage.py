"""The lineage graph: datasets, the flows that read and write them, and what is late.

Pure logic over what the store holds (`_store/_lineage.py` loads it): a
dataset is late when its `due_at` has passed; every flow downstream of a late
dataset (reading it, or reading what such a flow writes, transitively) is
affected, and so is every dataset those flows write.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import ConfigurationError

Direction = Literal["reads", "writes"]
DatasetState = Literal["late", "affected", "fresh", "unmonitored"]


@dataclass(frozen=True, slots=True)
class Dataset:
    """One dataset as the store has it (times in epoch seconds)."""

    name: str
    kind: str
    expect_seconds: float | None
    last_at: float | None
    due_at: float | None
    declared_at: float
    late_since: float | None = None
    """Set while a late notice is out (the guarded transition of `_store/_lineage.py`)."""

    def late(self, now: float) -> bool:
        return self.due_at is not None and self.due_at < now

    def age(self, now: float) -> float | None:
        return None if self.last_at is None else max(0.0, now - self.last_at)


@dataclass(frozen=True, slots=True)
class Edge:
    flow: str
    dataset: str
    direction: Direction
    expect_seconds: float | None = None
    """What this flow expects of the dataset: `expect_every`, `fresh_within`, a deadline."""


@dataclass(frozen=True, slots=True)
class Impact:
    """What one late dataset affects downstream."""

    dataset: str
    flows: tuple[str, ...]
    datasets: tuple[str, ...]


@dataclass(slots=True)
class Graph:
    datasets: dict[str, Dataset]
    edges: list[Edge]
    _readers: dict[str, set[str]] = field(default_factory=dict)
    _writes: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for edge in self.edges:
            if edge.direction == "reads":
                self._readers.setdefault(edge.dataset, set()).add(edge.flow)
            else:
                self._writes.setdefault(edge.flow, set()).add(edge.dataset)

    @property
    def flows(self) -> list[str]:
        return sorted({edge.flow for edge in self.edges})

    def affected(self, dataset: str) -> Impact:
        """Every flow and dataset downstream of `dataset`, transitively (cycles end)."""
        flows: set[str] = set()
        datasets: set[str] = set()
        todo = deque([dataset])
        while todo:
            for reader in self._readers.get(todo.popleft(), ()):
                if reader in flows:
                    continue
                flows.add(reader)
                for written in self._writes.get(reader, ()):
                    if written not in datasets and written != dataset:
                        datasets.add(written)
                        todo.append(written)
        return Impact(dataset, tuple(sorted(flows)), tuple(sorted(datasets)))

    def late(self, now: float) -> list[Impact]:
        return [self.affected(d.name) for d in self.datasets.values() if d.late(now)]

    def to_json(self, now: float) -> dict[str, Any]:
        """The graph as `/api/lineage` and `eventflow lineage --json` give it."""
        impacts = self.late(now)
        by_flow: dict[str, list[str]] = {}
        by_dataset: dict[str, list[str]] = {}
        for impact in impacts:
            for name in impact.flows:
                by_flow.setdefault(name, []).append(impact.dataset)
            for name in impact.datasets:
                by_dataset.setdefault(name, []).append(impact.dataset)
        datasets = []
        for d in sorted(self.datasets.values(), key=lambda d: d.name):
            state: DatasetState = (
                "late"
                if d.late(now)
                else "affected"
                if d.name in by_dataset
                else "fresh"
                if d.due_at is not None
                else "unmonitored"
            )
            datasets.append(
                {
                    "name": d.name,
                    "kind": d.kind,
                    "state": state,
                    "last_at": d.last_at,
                    "age_seconds": d.age(now),
                    "expect_seconds": d.expect_seconds,
                    "due_at": d.due_at,
                    "late_by_seconds": max(0.0, now - d.due_at)
                    if d.late(now) and d.due_at
                    else None,
                    "affected_by": sorted(by_dataset.get(d.name, [])),
                    "readers": sorted(self._readers.get(d.name, ())),
                    "writers": sorted(
                        e.flow
                        for e in self.edges
                        if e.direction == "writes" and e.dataset == d.name
                    ),
                }
            )
        flows = [
            {
                "name": name,
                "state": "affected" if name in by_flow else "ok",
                "affected_by": sorted(by_flow.get(name, [])),
                "reads": sorted(
                    e.dataset for e in self.edges if e.flow == name and e.direction == "reads"
                ),
                "writes": sorted(self._writes.get(name, ())),
            }
            for name in self.flows
        ]
        return {
            "now": now,
            "datasets": datasets,
            "flows": flows,
            "edges": [
                {"flow": e.flow, "dataset": e.dataset, "direction": e.direction}
                for e in sorted(self.edges, key=lambda e: (e.flow, e.direction, e.dataset))
            ],
            "late": [
                {
                    "dataset": i.dataset,
                    "affected_flows": list(i.flows),
                    "affected_datasets": list(i.datasets),
                }
                for i in sorted(impacts, key=lambda i: i.dataset)
            ],
        }


def check_acyclic(edges: Iterable[Edge]) -> None:
    """ConfigurationError when a flow is its own upstream (it reads, through other flows
    or directly, a dataset it writes): its own output would make it late for ever."""
    readers: dict[str, set[str]] = {}
    writes: dict[str, set[str]] = {}
    for edge in edges:
        if edge.direction == "reads":
            readers.setdefault(edge.dataset, set()).add(edge.flow)
        else:
            writes.setdefault(edge.flow, set()).add(edge.dataset)
    for start in sorted(writes):
        path = _path_back(start, readers, writes)
        if path is not None:
            raise ConfigurationError(
                f"flow {start!r} is its own upstream: {' -> '.join(path)}; a flow may not"
                " read (even through other flows) a dataset it writes"
            )


def _path_back(
    start: str, readers: dict[str, set[str]], writes: dict[str, set[str]]
) -> list[str] | None:
    """A path start -> dataset -> flow ... -> start, if there is one."""
    todo: deque[list[str]] = deque([[start]])
    seen: set[str] = set()
    while todo:
        path = todo.popleft()
        for dataset in sorted(writes.get(path[-1], ())):
            for reader in sorted(readers.get(dataset, ())):
                if reader == start:
                    return [*path, dataset, reader]
                if reader not in seen:
                    seen.add(reader)
                    todo.append([*path, dataset, reader])
    return None
