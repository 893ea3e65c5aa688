"""Delivery: one event on its way through a runner, its payload decoded at most once."""

from __future__ import annotations

from typing import Any

import orjson

from .._engine import NOT_DECODED
from .._store._fences import Fence
from .._store._runstore import FinishedRun
from ._source import Event, Partition


class Delivery:
    """An event a runner took: where it came from, and what the pipeline learnt of it.

    `document` is the event's JSON, decoded on first use and kept: flow
    controls' key functions, batches and `params` all read this one copy.
    """

    __slots__ = ("_document", "_error", "event", "fence", "partition", "previous", "run_id")

    def __init__(
        self, event: Event, partition: Partition | None, previous: FinishedRun | None = None
    ) -> None:
        self.event = event
        self.partition = partition
        self.previous = previous
        """The run this event already had (a redelivery): it must not run again."""
        self.run_id: str | None = None
        """The run id given before the run starts (a debounced burst's, a held event's)."""
        self.fence: Fence | None = None
        """The claim its run is made under (its partition's, else the worker's lease)."""
        self._document: Any = NOT_DECODED
        self._error: orjson.JSONDecodeError | None = None

    @property
    def document(self) -> Any:
        """The event's JSON document; None if it is not JSON."""
        if self._document is NOT_DECODED:
            try:
                self._document = orjson.loads(self.event.value)
            except orjson.JSONDecodeError as error:
                self._document, self._error = None, error
        return self._document

    @property
    def decoded_so_far(self) -> Any:
        """The event's JSON document if something decoded it already, else NOT_DECODED."""
        return NOT_DECODED if self._error is not None else self._document

    def decoded(self) -> Any:
        """The event's JSON document; raises the decoding error if it is not JSON."""
        document = self.document
        if self._error is not None:
            raise self._error
        return document


def partition_of(event: Event) -> Partition | None:
    return None if event.partition is None else (event.stream or "", event.partition)
