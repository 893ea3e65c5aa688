"""What the runtime keeps of a source's health: fetch errors counted, the last one, and
its outage logged without flooding. A source only reports (`Source.record_error`,
`Source.record_ok`); this bookkeeping is the runtime's."""

from __future__ import annotations

import time

from ._liveness import Outage


class SourceHealth:
    """A source's fetch errors: how many, the last one and when, and the current outage."""

    __slots__ = ("errors", "last_error", "last_error_at", "outage")

    def __init__(self, name: str) -> None:
        self.errors = 0
        """Fetch errors so far (exported as `eventflow_source_errors_total`)."""
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.outage = Outage(name)
        """The quiet log of the failures: the first one, then a summary every 30 s."""

    def failed(self, error: BaseException | str) -> None:
        self.errors += 1
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.last_error_at = time.time()
        self.outage.failed(self.last_error, self.last_error_at)

    def recovered(self) -> None:
        if self.outage.active:
            self.outage.recovered()

    @property
    def failing(self) -> bool:
        return self.outage.active
