"""HTTP polling: a JSON API polled on an interval, its items become events (httpx).

    HttpPollSource("http://localhost:8000/orders", interval=1.0, items="orders", id_field="id")

Each poll's JSON body is one event (`items=None`), or each element of the list
at a dotted path (`items="data.orders"`) or returned by a callable of the body.
An event's id is `<source name>:<item id>`, the item id being its `id_field`
(a dotted path) or a hash of its content, so it is stable across restarts; an
item already delivered within the last `dedupe_window` events is dropped, and
one whose run ended before a restart is not run again (the runtime checks the
store). `key_field` sets `Event.key`: same-key items run in order.

Between polls the source carries ETag / Last-Modified validators (a 304
produces no events) and a cursor: `cursor_from` (a dotted path in the body, or
a callable of it) gives the value sent next as the `cursor_param` query
parameter. Both only advance once the runtime took the poll's events; a
failed poll leaves them as they were. The cursor is also saved in the store,
once the runs of every event polled before it are durable: a restarted worker
polls from there (not from `cursor`), and an event whose run had not finished
is polled again.

Errors (5xx, 429, timeouts, refused connections, invalid JSON, a body over
`max_body_bytes`) are recorded in `source.stats` and logged; the source backs
off (at least the server's `Retry-After`) and keeps polling.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from eventflow import ConfigurationError
from eventflow.runtime import TRACING, Backoff, Event, EventSink, missing_extra, trace_headers

from ._polling import (
    PollBodyError,
    PollBodyTooLargeError,
    PollError,
    PollingSource,
    PollRequestError,
    PollStats,
    PollStatusError,
    url_for_names,
)

try:
    import httpx
except ImportError as error:  # without the `http` extra
    raise missing_extra("httpx", "http", "HttpPollSource") from error

logger = logging.getLogger("eventflow.polling")

__all__ = [
    "Backoff",
    "HttpPollSource",
    "PollBodyError",
    "PollBodyTooLargeError",
    "PollError",
    "PollRequestError",
    "PollStats",
    "PollStatusError",
]

ItemsSpec = str | Callable[[Any], Iterable[Any]] | None
CursorSpec = str | Callable[[Any], Any] | None

_MAX_EVENT_ID = 500
"""The store's `flow_runs.event_id` width; longer ids are replaced by their hash."""

_MISSING = object()


def at_path(value: Any, path: str) -> Any:
    """The value at a dotted path (`"data.orders"`, `"items.0.id"`), or `_MISSING`."""
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(value) <= index < len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


def _with_params(url: str, params: Mapping[str, str] | None) -> str:
    """`url` with `params` merged into its query string (httpx would replace it)."""
    return str(httpx.URL(url).copy_merge_params(dict(params))) if params else url


def content_hash(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Validators:
    """ETag / Last-Modified of the last 200 answer, valid for requests with this cursor."""

    cursor: str | None
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a poll computed; committed by `delivered`."""

    cursor: str | None
    validators: _Validators | None
    ids: tuple[str, ...]
    duplicates: int


_PAGES_BEFORE_COMPACTING = 64


@dataclass(slots=True)
class _Page:
    """One poll's cursor and its events not acknowledged yet."""

    cursor: str | None
    pending: set[str]


class HttpPollSource(PollingSource):
    """Polls a JSON endpoint every `interval` seconds (± `jitter`); see the module docstring."""

    def __init__(
        self,
        url: str,
        interval: float = 1.0,
        *,
        method: str = "GET",
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        json_body: Any = None,
        timeout: float = 10.0,
        items: ItemsSpec = None,
        id_field: str | None = None,
        key_field: str | None = None,
        cursor_param: str | None = None,
        cursor_from: CursorSpec = None,
        cursor: str | None = None,
        conditional: bool = True,
        max_body_bytes: int = 10 * 2**20,
        dedupe_window: int = 10_000,
        jitter: float = 0.1,
        backoff: Backoff | None = None,
        name: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if (cursor_param is None) != (cursor_from is None):
            raise ConfigurationError("cursor_param and cursor_from go together")
        if max_body_bytes < 1 or dedupe_window < 0:
            raise ConfigurationError("max_body_bytes must be >= 1 and dedupe_window >= 0")
        super().__init__(
            name=name or f"http:{url_for_names(url)}",
            interval=interval,
            jitter=jitter,
            backoff=backoff,
            timeout=timeout,
            client=client,
            headers={"Accept": "application/json", **(headers or {})},
            auth=auth,
        )
        self.url = _with_params(url, params)
        self.method = method.upper()
        self.content = orjson.dumps(json_body) if json_body is not None else None
        if self.content is not None:
            self.headers.setdefault("Content-Type", "application/json")
        self.items = items
        self.id_field = id_field
        self.key_field = key_field
        self.cursor_param = cursor_param
        self.cursor_from = cursor_from
        self.cursor = cursor
        """The cursor the next poll sends; advances only when a poll's events were taken."""
        self.conditional = conditional
        self.max_body_bytes = max_body_bytes
        self.dedupe_window = dedupe_window
        self._validators: _Validators | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._outcome: _Outcome | None = None
        self._sink: EventSink | None = None
        self._pages: deque[_Page] = deque()
        """Polls (with a cursor) not yet saved, oldest first; polls whose events are all
        acknowledged are merged into the one before when it is complete too."""
        self._pages_of: dict[str, list[_Page]] = {}
        self._saved_cursor: str | None = None

    async def resume(self, sink: EventSink) -> None:
        self._sink = sink
        if self.cursor_param is None:
            return
        saved = await sink.durable.checkpoint()
        if saved is not None:
            logger.info("%s: resuming at cursor %r", self.name, saved)
            self.cursor = self._saved_cursor = saved

    async def poll(self, client: httpx.AsyncClient) -> Sequence[Event]:
        self._outcome = None
        cursor = self.cursor
        url = self.url
        if self.cursor_param is not None and cursor is not None:
            url = _with_params(url, {self.cursor_param: cursor})
        conditional: dict[str, str] = {}
        validators = self._validators
        if self.conditional and validators is not None and validators.cursor == cursor:
            if validators.etag is not None:
                conditional["If-None-Match"] = validators.etag
            if validators.last_modified is not None:
                conditional["If-Modified-Since"] = validators.last_modified
        fetched = await self.fetch(
            client,
            url,
            method=self.method,
            headers=conditional,
            content=self.content,
            max_body_bytes=self.max_body_bytes,
            ok=(304,),
        )
        self.stats.last_status = fetched.status
        if fetched.status == 304:
            self.stats.not_modified += 1
            return []
        if fetched.status == 204 or not fetched.body.strip():
            return []  # nothing new: a successful poll, not an error to back off from
        try:
            body = orjson.loads(fetched.body)
        except orjson.JSONDecodeError as error:
            raise PollBodyError(f"invalid JSON in the response: {error}") from error
        now = time.time()
        events: list[Event] = []
        ids: set[str] = set()
        duplicates = 0
        # a server that answers in a trace (`traceparent`): the poll's runs join it
        context = trace_headers(fetched.headers) if TRACING.on else ()
        for item in self._split(body):
            event_id = self._event_id(item)
            if event_id in ids or event_id in self._recent:
                duplicates += 1
                continue
            ids.add(event_id)
            events.append(
                Event(
                    id=event_id,
                    value=orjson.dumps(item),
                    key=self._key(item),
                    timestamp=now,
                    headers=context,
                )
            )
        etag = fetched.headers.get("etag")
        last_modified = fetched.headers.get("last-modified")
        self._outcome = _Outcome(
            cursor=self._next_cursor(body, cursor),
            validators=_Validators(cursor, etag, last_modified) if etag or last_modified else None,
            ids=tuple(e.id for e in events),
            duplicates=duplicates,
        )
        return events

    def delivered(self, events: Sequence[Event]) -> None:
        outcome, self._outcome = self._outcome, None
        if outcome is None:  # 304: nothing changed
            return
        self.cursor = outcome.cursor
        self._validators = outcome.validators
        self.stats.duplicates += outcome.duplicates
        if self.cursor_param is not None:
            pending = {event.id for event in events}
            pages = self._pages
            if not pending and pages and not pages[-1].pending:
                pages[-1].cursor = outcome.cursor  # bounded while an older poll waits
            else:
                page = _Page(outcome.cursor, pending)
                pages.append(page)
                for event_id in pending:
                    self._pages_of.setdefault(event_id, []).append(page)
                if len(pages) > _PAGES_BEFORE_COMPACTING:
                    self._compact_pages()
            self._save_cursor()
        if self.dedupe_window:
            recent = self._recent
            for event_id in outcome.ids:
                recent[event_id] = None
                recent.move_to_end(event_id)
            while len(recent) > self.dedupe_window:
                recent.popitem(last=False)

    def _compact_pages(self) -> None:
        """Merge each run of complete polls into one (with the last cursor): behind an
        event that is never acknowledged (`on_failure="stop"`), polls would pile up."""
        merged: deque[_Page] = deque()
        for page in self._pages:
            if not page.pending and merged and not merged[-1].pending:
                merged[-1].cursor = page.cursor
            else:
                merged.append(page)
        self._pages = merged

    async def ack(self, events: Sequence[Event]) -> None:
        await super().ack(events)
        if self._pages:
            for event in events:
                for page in self._pages_of.pop(event.id, ()):
                    page.pending.discard(event.id)
            self._save_cursor()

    def _save_cursor(self) -> None:
        """Save the cursor after the last poll whose events, and all before, are acknowledged."""
        cursor = self._saved_cursor
        pages = self._pages
        while pages and not pages[0].pending:
            cursor = pages.popleft().cursor
        if cursor is not None and cursor != self._saved_cursor and self._sink is not None:
            self._sink.durable.save_checkpoint(str(cursor))
            self._saved_cursor = cursor

    # -- translating a body ------------------------------------------------------------

    def _split(self, body: Any) -> list[Any]:
        spec = self.items
        if spec is None:
            return [body]
        if callable(spec):
            return list(spec(body))
        found = at_path(body, spec)
        if found is _MISSING:
            raise PollBodyError(f"no {spec!r} in the response")
        if found is None:
            return []
        if not isinstance(found, list):
            raise PollBodyError(f"{spec!r} in the response is a {type(found).__name__}, not a list")
        return found

    def _event_id(self, item: Any) -> str:
        item_id = None
        if self.id_field is not None:
            found = at_path(item, self.id_field)
            if found is not _MISSING and found is not None:
                item_id = str(found)
        if item_id is None:
            item_id = f"sha256:{content_hash(item)}"
        event_id = f"{self.name}:{item_id}"
        if len(event_id) > _MAX_EVENT_ID:
            event_id = f"sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"
        return event_id

    def _key(self, item: Any) -> str | None:
        if self.key_field is None:
            return None
        found = at_path(item, self.key_field)
        return None if found is _MISSING or found is None else str(found)[:_MAX_EVENT_ID]

    def _next_cursor(self, body: Any, current: str | None) -> str | None:
        spec = self.cursor_from
        if spec is None:
            return current
        found = spec(body) if callable(spec) else at_path(body, spec)
        if found is _MISSING or found is None or found == "":
            return current  # no next cursor: ask again from the same place
        return str(found)
