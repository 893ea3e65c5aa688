"""KeyClaims: the idempotency claims of a runner's events, many per store transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from .._store._runstore import Claim, RunStore


class KeyClaims:
    """Gathers the claims asked for while one transaction runs, and sends them in the next.

    A claim whose caller went away (cancelled) before it was granted is handed
    to `on_orphan`, which must release it: nobody will settle it otherwise. The
    sender is a helper task of the runner's task group (`start_helper`).
    """

    def __init__(
        self,
        store: RunStore,
        flow_name: str,
        worker_id: str,
        window_seconds: float,
        on_orphan: Callable[[str, str], None],
        start_helper: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.store = store
        self.flow_name = flow_name
        self.worker_id = worker_id
        self.window_seconds = window_seconds
        self.on_orphan = on_orphan
        self.start_helper = start_helper
        self._pending: list[tuple[str, str, asyncio.Future[Claim]]] = []
        self._sending = False

    async def claim(self, key: str, run_id: str) -> Claim:
        """Claim `key` for `run_id` (raises what the store raised)."""
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
        self._pending.append((key, run_id, future))
        if not self._sending:
            self._sending = True
            self.start_helper(self._send())
        try:
            return await future
        except asyncio.CancelledError:
            granted = future.done() and not future.cancelled() and future.exception() is None
            if granted and future.result().outcome == "claimed":
                self.on_orphan(key, run_id)  # granted as the caller was cancelled
            raise

    async def _send(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    claims = await self.store.claim_keys(
                        self.flow_name,
                        [(key, run_id) for key, run_id, _ in batch],
                        self.worker_id,
                        self.window_seconds,
                    )
                except Exception as error:
                    for _key, _run_id, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for key, run_id, future in batch:
                    claim = claims[run_id]
                    if not future.done():
                        future.set_result(claim)
                    elif claim.outcome == "claimed":
                        self.on_orphan(key, run_id)
        finally:
            self._sending = False
