"""JSONL files as a finite, resumable source: every line one event (for backfills).

The file is one partition: stream = the file's name, partition 0, offset =
the line number (from 1; blank lines are skipped). With a `group_id` the
runtime stores the next line to read with the runs, so a second pass resumes
after the last line whose run finished and runs nothing twice. `run` returns
once every line has been delivered.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import BinaryIO

from eventflow.runtime import Event, EventSink, Source

logger = logging.getLogger("eventflow.jsonl")


class JsonlSource(Source):
    """The lines of a JSONL file, each the JSON parameters of one flow run.

    `stream` names the file in the store (default: its name); lines that are
    not JSON, or not valid parameters, become FAILED runs like any poison event.
    `total` and `already_done` (lines before the stored offset) are known once
    `run` has started; a progress bar reads them.
    """

    finite = True

    def __init__(
        self,
        path: str | Path,
        *,
        stream: str | None = None,
        group_id: str | None = None,
        batch_lines: int = 50,
    ) -> None:
        self.path = Path(path)
        self.stream = stream or self.path.name
        # the whole path: a backfill's default progress key, so another file of the
        # same name does not resume where this one stopped
        self.name = f"jsonl:{self.path.resolve()}"
        self.group_id = group_id
        self.batch_lines = batch_lines
        self.total: int | None = None
        self.already_done = 0

    async def run(self, sink: EventSink) -> None:
        partition = (self.stream, 0)
        stored = await sink.assigned([partition])
        start = stored.get(partition, 1)
        self.total, self.already_done = await asyncio.to_thread(_count_lines, self.path, start)
        if start > 1:
            logger.info("%s: resuming at line %d", self.name, start)
        file = await asyncio.to_thread(self.path.open, "rb")
        try:
            line_number = await asyncio.to_thread(_skip_lines, file, start - 1)
            while not sink.stopping:
                if partition in sink.paused([partition]):
                    await asyncio.sleep(0.02)
                    continue
                lines = await asyncio.to_thread(_read_lines, file, self.batch_lines)
                if not lines:
                    return
                events = []
                for line in lines:
                    line_number += 1
                    value = line.strip()
                    if not value:
                        continue
                    events.append(
                        Event(
                            id=f"{self.stream}:{line_number}",
                            value=value,
                            stream=self.stream,
                            partition=0,
                            offset=line_number,
                        )
                    )
                if events:
                    await sink.deliver(events)
        finally:
            await asyncio.to_thread(file.close)


def _skip_lines(file: BinaryIO, count: int) -> int:
    """Read past `count` lines (those a previous pass finished); how many there were."""
    skipped = 0
    while skipped < count and file.readline():
        skipped += 1
    return skipped


def _read_lines(file: BinaryIO, count: int) -> list[bytes]:
    lines = []
    for _ in range(count):
        line = file.readline()
        if not line:
            break
        lines.append(line)
    return lines


def _count_lines(path: Path, start: int) -> tuple[int, int]:
    """Non-blank lines in all, and before line number `start`."""
    total = before = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                total += 1
                if number < start:
                    before += 1
    return total, before
