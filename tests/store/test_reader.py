"""Read queries the CLI and the API use, against real databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventflow import flow, get_run_logger, task
from eventflow._store._reader import RunFilter, RunNotFoundError, RunReader


@task
def step(x: int) -> int:
    get_run_logger().info("step %d", x)
    if x < 0:
        raise ValueError("negative")
    return x


@flow(name="reader-flow")
async def reader_flow(x: int) -> int:
    return await step.submit(step.submit(x))


@flow(name="other-flow")
def other_flow() -> None: ...


async def test_filters_pagination_and_detail(any_default_store: str) -> None:
    for x in (1, 2, 3, -1):
        await reader_flow(x, return_state=True)  # type: ignore[call-arg]
    import asyncio

    await asyncio.to_thread(other_flow)
    reader = RunReader(any_default_store)
    try:
        everything = await reader.list_flow_runs(limit=100)
        assert len(everything) == 5
        assert everything[0]["flow_name"] == "other-flow"  # newest first
        assert len(await reader.list_flow_runs(RunFilter(flow="reader-flow"))) == 4
        failed = await reader.list_flow_runs(RunFilter(state="failed"))
        assert [r["flow_name"] for r in failed] == ["reader-flow"]
        page = await reader.list_flow_runs(RunFilter(flow="reader-flow"), limit=2, offset=2)
        assert [r["id"] for r in page] == [r["id"] for r in everything[3:5]]
        assert (
            await reader.list_flow_runs(RunFilter(since=datetime.now(UTC) + timedelta(hours=1)))
            == []
        )
        assert await reader.count_flow_runs(RunFilter(flow="reader-flow", state="COMPLETED")) == 3

        detail = await reader.get_flow_run(failed[0]["id"][-10:])  # a suffix is enough
        assert [t["state_type"] for t in detail["task_runs"]] == ["FAILED", "FAILED"]
        assert detail["task_runs"][1]["state_name"] == "NotReady"
        assert len(detail["edges"]) == 1
        assert sorted(entry["message"] for entry in detail["logs"]) == [
            f"flow run {detail['id']} FAILED: UpstreamFailedError: "
            "upstream task run(s) did not complete: step",
            "step -1",
            "task run step-0 ended Failed after 1 attempt(s): ValueError: negative",
        ]

        flows = {f["name"]: f for f in await reader.list_flows()}
        assert flows["reader-flow"]["runs"] == 4
        assert flows["reader-flow"]["states"] == {"COMPLETED": 3, "FAILED": 1}
        with pytest.raises(RunNotFoundError):
            await reader.get_flow_run("0000nothere")
    finally:
        await reader.close()
