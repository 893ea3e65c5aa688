"""`/api/lineage`: the datasets, the flows that read and write them, what is late and affected."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from .._store._operator import OperatorStore

router = APIRouter(prefix="/api")


class LineageDataset(BaseModel):
    name: str = Field(description="`kafka:<topic>`, a URL, `table:<schema.name>`, ...")
    kind: str
    state: Literal["late", "affected", "fresh", "unmonitored"] = Field(
        description="late: its expectation missed; affected: downstream of a late dataset;"
        " fresh: its expectation met; unmonitored: no expectation (never late)."
    )
    last_at: float | None = Field(None, description="Last event or write (epoch seconds).")
    age_seconds: float | None = None
    expect_seconds: float | None = Field(
        None, description="expect_every, fresh_within or a schedule's deadline."
    )
    due_at: float | None = Field(None, description="When the next event or write is due.")
    late_by_seconds: float | None = None
    affected_by: list[str] = Field(description="The late datasets upstream of it.")
    readers: list[str]
    writers: list[str]


class LineageFlow(BaseModel):
    name: str
    state: Literal["affected", "ok"]
    affected_by: list[str] = Field(description="The late datasets upstream of it.")
    reads: list[str]
    writes: list[str]


class LineageEdge(BaseModel):
    flow: str
    dataset: str
    direction: Literal["reads", "writes"]


class LateDataset(BaseModel):
    dataset: str
    affected_flows: list[str] = Field(description="Every flow downstream, transitively.")
    affected_datasets: list[str]


class Lineage(BaseModel):
    now: float
    datasets: list[LineageDataset]
    flows: list[LineageFlow]
    edges: list[LineageEdge]
    late: list[LateDataset]


@router.get(
    "/lineage",
    response_model=Lineage,
    summary="The lineage graph: each dataset's last event or write, age, expectation, state",
)
async def lineage(request: Request) -> Lineage:
    store: OperatorStore = request.app.state.store
    graph = await store.lineage()
    return Lineage.model_validate(graph.to_json(time.time()))
