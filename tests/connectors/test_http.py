"""HttpPollSource against real HTTP servers on loopback, through a real App and SQLite store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest

from connectors.http import _PAGES_BEFORE_COMPACTING, Backoff, HttpPollSource
from eventflow import App, flow, task
from eventflow._store import _schema as schema
from examples.orders_api import OrdersApi
from tests._kafka import wait_until
from tests._services import free_port
from tests._store import flow_runs
from tests._store import rows as table_rows
from tests.connectors._app import app_for, completed_event_ids, recording_flow, serving, settings
from tests.connectors._servers import (
    Reply,
    Request,
    ScriptedApp,
    ServerThread,
    replies,
    serve,
)

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0)


def poller(base_url: str, path: str, **options: Any) -> HttpPollSource:
    options.setdefault("interval", 0.05)
    options.setdefault("backoff", FAST)
    return HttpPollSource(base_url + path, **options)


def gaps(requests: list[Request]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(requests)]


async def test_each_distinct_item_runs_once_even_when_served_again_and_after_a_restart(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route(
        "/dedupe",
        replies(
            Reply(json={"data": {"orders": [{"id": "a", "n": 1}, {"id": "b", "n": 2}]}}),
            Reply(json={"data": {"orders": [{"id": "b", "n": 2}, {"id": "c"}, {"id": "c"}]}}),
        ),
    )
    record, seen = recording_flow("http-dedupe")
    source = poller(feed.url, path, items="data.orders", id_field="id")
    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(
            lambda: len(scripted.requests_to(path)) >= 4 and source.stats.acked >= 3, timeout=20
        )
    assert sorted(await completed_event_ids(sqlite_url, "http-dedupe")) == [
        f"{source.name}:{x}" for x in "abc"
    ]
    assert sorted(item["id"] for item in seen) == ["a", "b", "c"]
    assert source.stats.duplicates >= 5  # b and c again on poll 2, b, c, c on poll 3

    # a new worker, a new source (empty dedupe window): the store remembers what ran
    scripted.route(
        "/dedupe", replies(Reply(json={"data": {"orders": [{"id": x} for x in "abcd"]}}))
    )
    restarted = poller(feed.url, path, items="data.orders", id_field="id")
    app = app_for(sqlite_url, restarted, record)
    async with serving(app):
        await wait_until(
            lambda: restarted.stats.acked >= 4 and app.runners[0].stats.skipped_duplicates >= 3,
            timeout=20,
        )
    assert sorted(item["id"] for item in seen) == ["a", "b", "c", "d"]  # only d ran
    runs = await flow_runs(sqlite_url, flow_name="http-dedupe")
    assert sorted(r["event_id"] for r in runs) == [f"{source.name}:{x}" for x in "abcd"]
    assert {r["state_type"] for r in runs} == {"COMPLETED"}


async def test_a_304_produces_no_events_and_the_server_sees_the_validators(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    modified = "Wed, 25 Nov 2026 10:00:00 GMT"

    def conditional(request: Request) -> Reply:
        if request.headers.get("if-none-match") == '"v1"':
            return Reply(304, headers={"ETag": '"v1"'})
        return Reply(
            json={"items": [{"id": "e1"}]}, headers={"ETag": '"v1"', "Last-Modified": modified}
        )

    path = scripted.route("/etag", conditional)
    record, _seen = recording_flow("http-etag")
    source = poller(feed.url, path, items="items", id_field="id")
    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(lambda: source.stats.not_modified >= 3, timeout=20)
    first, *later = scripted.requests_to(path)
    assert "if-none-match" not in first.headers
    assert later
    assert all(r.headers.get("if-none-match") == '"v1"' for r in later)
    assert all(r.headers.get("if-modified-since") == modified for r in later)
    assert source.stats.events == 1
    assert source.stats.duplicates == 0  # the 304s were never parsed into items
    assert len(await completed_event_ids(sqlite_url, "http-etag")) == 1


async def test_a_204_or_an_empty_body_is_nothing_new_not_an_error(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route(
        "/quiet", replies(Reply(204), Reply(200, body=b""), Reply(json={"items": [{"id": "q1"}]}))
    )
    record, _seen = recording_flow("http-quiet")
    source = poller(feed.url, path, items="items", id_field="id")
    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(lambda: source.stats.events >= 1, timeout=20)
    assert source.stats.errors == 0  # no backoff: the quiet answers were successful polls
    assert len(await completed_event_ids(sqlite_url, "http-quiet")) == 1


async def test_the_cursor_is_carried_across_polls_and_kept_across_an_error(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    calls = {"c1": 0}

    def paged(request: Request) -> Reply:
        after = request.query.get("after")
        if after is None:
            return Reply(json={"items": [{"id": 1}, {"id": 2}], "next_cursor": "c1"})
        if after == "c1":
            calls["c1"] += 1
            if calls["c1"] == 1:
                return Reply(500, json={"error": "boom"})
            return Reply(json={"items": [{"id": 3}], "next_cursor": "c2"})
        if after == "c2":
            return Reply(json={"items": [], "next_cursor": None})
        return Reply(400)

    path = scripted.route("/paged", paged)
    record, _seen = recording_flow("http-cursor")
    source = poller(
        feed.url,
        path,
        items="items",
        id_field="id",
        cursor_param="after",
        cursor_from="next_cursor",
    )
    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(lambda: len(scripted.requests_to(path)) >= 5, timeout=20)
        await wait_until(lambda: source.stats.acked >= 3, timeout=20)
    sent = [r.query.get("after") for r in scripted.requests_to(path)]
    assert sent[:5] == [None, "c1", "c1", "c2", "c2"]  # the 500 neither reset nor advanced it
    assert set(sent[3:]) == {"c2"}  # a null next cursor keeps the last one
    assert source.cursor == "c2"
    assert source.stats.errors == 1
    assert source.stats.last_error is not None and "HTTP 500" in source.stats.last_error
    assert sorted(await completed_event_ids(sqlite_url, "http-cursor")) == [
        f"{source.name}:{i}" for i in (1, 2, 3)
    ]


async def test_429_retry_after_is_honoured(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route(
        "/limited",
        replies(Reply(429, headers={"Retry-After": "1"}), Reply(json=[{"id": "r1"}])),
    )
    record, _seen = recording_flow("http-429")
    source = poller(feed.url, path, items=lambda body: body, id_field="id")
    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(lambda: source.stats.acked >= 1, timeout=20)
    first, second = scripted.requests_to(path)[:2]
    assert second.at - first.at >= 1.0  # backoff alone would have waited 0.05 s
    assert source.stats.errors_by_kind == {"PollStatusError": 1}
    assert source.stats.last_error is not None and "HTTP 429" in source.stats.last_error
    assert source.stats.consecutive_errors == 0
    assert await completed_event_ids(sqlite_url, "http-429") == [f"{source.name}:r1"]


async def test_5xx_backs_off_exponentially_then_recovers(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route(
        "/flaky", replies(Reply(500), Reply(502), Reply(503), Reply(json={"items": [{"id": 1}]}))
    )
    record, _seen = recording_flow("http-5xx")
    source = poller(
        feed.url,
        path,
        items="items",
        id_field="id",
        backoff=Backoff(initial=0.1, maximum=1.0, factor=3, jitter=0),
    )
    async with serving(app_for(sqlite_url, source, record)) as serve_task:
        await wait_until(lambda: source.stats.acked >= 1, timeout=20)
        assert not serve_task.done()
    waited = gaps(scripted.requests_to(path)[:4])
    assert waited[0] >= 0.1 and waited[1] >= 0.3 and waited[2] >= 0.9
    assert waited[0] < waited[1] < waited[2]
    assert source.stats.errors == 3 and source.stats.consecutive_errors == 0
    assert source.stats.last_success_at is not None
    assert source.errors == 3  # the source-level count the metrics exporter reads
    assert len(await completed_event_ids(sqlite_url, "http-5xx")) == 1


BAD_RESPONSES = {
    "timeout": (Reply(delay=1.0, json={"items": []}), "PollRequestError", "within 0.3s"),
    "invalid_json": (Reply(body=b'{"items": [', headers={}), "PollBodyError", "invalid JSON"),
    "missing_path": (Reply(json={"data": []}), "PollBodyError", "no 'items'"),
    "too_large": (Reply(body=b"[" + b" " * 4000 + b"]"), "PollBodyTooLargeError", "4002"),
    "too_large_streamed": (Reply(chunks=160), "PollBodyTooLargeError", "stopped reading"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
async def test_a_bad_response_is_recorded_and_polling_goes_on(
    case: str, feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    bad, kind, message = BAD_RESPONSES[case]
    path = scripted.route(f"/bad-{case}", replies(bad, bad, Reply(json={"items": [{"id": 1}]})))
    record, _seen = recording_flow(f"http-bad-{case}")
    source = poller(feed.url, path, items="items", id_field="id", timeout=0.3, max_body_bytes=1024)
    async with serving(app_for(sqlite_url, source, record)) as serve_task:
        await wait_until(lambda: source.stats.acked >= 1, timeout=20)
        assert not serve_task.done()
    assert source.stats.errors_by_kind == {kind: 2}
    assert source.stats.last_error is not None and message in source.stats.last_error
    assert source.stats.consecutive_errors == 0
    assert await completed_event_ids(sqlite_url, f"http-bad-{case}") == [f"{source.name}:1"]


async def test_a_refused_connection_is_retried_until_a_server_answers(sqlite_url: str) -> None:
    port = free_port()  # nothing listens here yet
    record, _seen = recording_flow("http-refused")
    source = poller(f"http://127.0.0.1:{port}", "/feed", items="items", id_field="id")
    async with serving(app_for(sqlite_url, source, record)) as serve_task:
        await wait_until(lambda: source.stats.errors >= 3, timeout=20)
        assert source.stats.errors_by_kind == {"PollRequestError": source.stats.errors}
        assert source.stats.last_error is not None and "ConnectError" in source.stats.last_error
        assert not serve_task.done()
        late = ScriptedApp()
        late.route("/feed", replies(Reply(json={"items": [{"id": "late"}]})))
        server = ServerThread(late, port=port).start()
        try:
            await wait_until(lambda: source.stats.acked >= 1, timeout=20)
        finally:
            server.stop()
    assert await completed_event_ids(sqlite_url, "http-refused") == [f"{source.name}:late"]


@pytest.fixture
def orders_api() -> Iterator[tuple[OrdersApi, ServerThread]]:
    api = OrdersApi(failure_rate=0.3, slow_rate=0.2, slow_seconds=0.2, retry_after=0, seed=7)
    for server in serve(api):
        yield api, server


async def test_the_orders_api_feed_becomes_one_completed_run_per_order(
    orders_api: tuple[OrdersApi, ServerThread], sqlite_url: str
) -> None:
    api, server = orders_api
    record, seen = recording_flow("http-orders")
    source = poller(
        server.url,
        "/orders?max_value=20",
        items="orders",
        id_field="id",
        key_field="customer_id",
        timeout=2.0,
    )
    taken: set[str] = set()

    async def caught_up() -> bool:
        if len(api.served) < 30 or api.failures < 2:
            return False
        served = {f"{source.name}:{i}" for i in api.served}
        done = await flow_runs(sqlite_url, flow_name="http-orders", state_type="COMPLETED")
        taken.update(served)
        return served <= {r["event_id"] for r in done}

    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(caught_up, timeout=30)
    served = set(api.served)
    assert len(served) == len(api.served)  # the API's ids are unique
    runs = await flow_runs(sqlite_url, flow_name="http-orders")
    ids = [r["event_id"] for r in runs]
    assert len(ids) == len(set(ids))  # one run per order
    # every order served before the check has its run; a page served while the
    # worker stopped is not taken (a restarted worker polls it again)
    assert taken <= set(ids) <= {f"{source.name}:{i}" for i in served}
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    assert {r["event_key"] for r in runs} <= {f"c{i}" for i in range(10)}
    assert all(0 <= item["amount"] <= 20 for item in seen)
    assert source.stats.errors == api.failures  # every injected 503, nothing else


async def test_method_headers_auth_query_and_body_are_sent(
    feed: ServerThread, scripted: ScriptedApp
) -> None:
    path = scripted.route("/search", replies(Reply(json={"hits": [{"id": 9}]})))
    source = HttpPollSource(
        f"{feed.url}{path}?region=eu",
        method="post",
        params={"limit": "10"},
        headers={"X-Team": "data"},
        auth=("user", "secret"),
        json_body={"query": "orders"},
        items="hits",
        id_field="id",
        cursor_param="page",
        cursor_from=lambda body: len(body["hits"]) + 1,
    )
    async with httpx.AsyncClient() as client:
        events = await source.poll(client)
        source.delivered(events)
        await source.poll(client)
    first, second = scripted.requests_to(path)
    assert first.method == "POST"
    assert first.query == {"region": "eu", "limit": "10"}
    assert second.query == {"region": "eu", "limit": "10", "page": "2"}
    assert first.headers["x-team"] == "data"
    assert first.headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="
    assert first.headers["content-type"] == "application/json"
    # the name (and so the ids) leaves out the query string, where API keys travel
    assert [e.id for e in events] == [f"http:{feed.url}{path}:9"]
    assert orjson.loads(events[0].value) == {"id": 9}


async def test_no_poll_while_the_runtime_is_at_its_in_flight_bound(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    counter = itertools.count()
    path = scripted.route("/bounded", lambda _r: Reply(json=[{"id": next(counter)}]))
    release = asyncio.Event()
    started: list[int] = []

    @flow(name="http-bounded")
    async def slow(item: dict[str, Any]) -> None:
        started.append(item["id"])
        await release.wait()

    source = poller(feed.url, path, items=lambda body: body, id_field="id", interval=0.02)
    app = App(settings(sqlite_url))
    app.subscribe(source, slow, params=lambda e: {"item": orjson.loads(e.value)}, max_in_flight=1)
    async with serving(app):
        try:
            await wait_until(lambda: started, timeout=20)
            # an observation window of 25 poll intervals: the source must stay idle in it
            await asyncio.sleep(0.5)
            assert len(scripted.requests_to(path)) == 1
            assert started == [0]
        finally:
            release.set()  # a failure here must not leave runs blocked through shutdown
        await wait_until(lambda: len(started) >= 3, timeout=20)
    assert started[:3] == [0, 1, 2]


def cursor_pages(request: Request) -> Reply:
    """Three pages: no cursor -> items 1, 2; c1 -> item 3; c2 -> nothing new."""
    after = request.query.get("after")
    if after is None:
        return Reply(json={"items": [{"id": 1}, {"id": 2}], "next_cursor": "c1"})
    if after == "c1":
        return Reply(json={"items": [{"id": 3}], "next_cursor": "c2"})
    return Reply(json={"items": [], "next_cursor": None})


def cursor_poller(base_url: str, path: str) -> HttpPollSource:
    options: dict[str, Any] = {"cursor_param": "after", "cursor_from": "next_cursor"}
    return poller(base_url, path, items="items", id_field="id", **options)


async def stored_cursor(url: str) -> str | None:
    rows = await table_rows(url, schema.source_checkpoints)
    return rows[0]["value"] if rows else None


async def test_a_restarted_worker_polls_from_the_cursor_saved_in_the_store(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route("/resume", cursor_pages)
    record, seen = recording_flow("http-resume")
    source = cursor_poller(feed.url, path)
    async with serving(app_for(sqlite_url, source, record)):
        await wait_until(lambda: source.stats.acked >= 3, timeout=20)
    assert await stored_cursor(sqlite_url) == "c2"  # saved at the latest by the graceful stop

    scripted.requests.clear()
    restarted = cursor_poller(feed.url, path)  # starts with no cursor of its own
    async with serving(app_for(sqlite_url, restarted, record)):
        await wait_until(lambda: restarted.stats.polls >= 2, timeout=20)
    assert [r.query.get("after") for r in scripted.requests_to(path)][:2] == ["c2", "c2"]
    assert sorted(item["id"] for item in seen) == [1, 2, 3]  # nothing polled or run twice


async def test_a_poll_whose_runs_did_not_finish_is_polled_again_after_a_restart(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route("/unfinished", cursor_pages)
    started_3 = asyncio.Event()

    @flow(name="http-unfinished")
    async def slow_on_3(item: dict[str, Any]) -> None:
        if item["id"] == 3:
            started_3.set()
            await asyncio.Event().wait()  # cancelled when the worker stops

    source = cursor_poller(feed.url, path)
    app = App(replace(settings(sqlite_url), shutdown_grace=0.2))
    app.subscribe(source, slow_on_3, params=lambda event: {"item": orjson.loads(event.value)})
    async with serving(app):
        await asyncio.wait_for(started_3.wait(), 20)
        await wait_until(lambda: source.stats.acked >= 2, timeout=20)
    # items 1 and 2 are durable (cursor c1 saved); item 3's run never finished
    assert await stored_cursor(sqlite_url) == "c1"

    scripted.requests.clear()
    record, _seen = recording_flow("http-unfinished")
    restarted = cursor_poller(feed.url, path)
    async with serving(app_for(sqlite_url, restarted, record)):
        await wait_until(lambda: restarted.stats.polls >= 1, timeout=20)
    assert scripted.requests_to(path)[0].query.get("after") == "c1"


async def test_a_crashed_run_of_a_polled_item_resumes_after_its_completed_task(
    feed: ServerThread, scripted: ScriptedApp, database_url: str
) -> None:
    """Item 3's run is cut off in its second task at shutdown (CRASHED); polled again
    after the restart, its new run reuses the first task's result instead of calling it."""
    path = scripted.route("/durable", cursor_pages)
    charged: list[int] = []
    in_ship = asyncio.Event()
    ship_hangs_on = {3}

    @task
    async def charge_item(item_id: int) -> str:
        charged.append(item_id)
        return f"receipt-{item_id}"

    @task
    async def ship_item(item_id: int, receipt: str) -> str:
        if item_id in ship_hangs_on:
            in_ship.set()
            await asyncio.Event().wait()  # cancelled when the worker stops
        return f"shipped with {receipt}"

    @flow(name="http-durable")
    async def charge_then_ship(item: dict[str, Any]) -> str:
        return await ship_item(item["id"], await charge_item(item["id"]))

    def worker() -> App:
        app = App(replace(settings(database_url), shutdown_grace=0.2))
        app.subscribe(
            cursor_poller(feed.url, path),
            charge_then_ship,
            params=lambda event: {"item": orjson.loads(event.value)},
        )
        return app

    async def run_of_item_3(state: str) -> dict[str, Any] | None:
        found = [
            run
            for run in await flow_runs(database_url, flow_name="http-durable", state_type=state)
            if orjson.loads(run["event_payload"])["id"] == 3
        ]
        return found[-1] if found else None

    async with serving(worker()):
        await asyncio.wait_for(in_ship.wait(), 20)
    crashed = await run_of_item_3("CRASHED")
    assert crashed is not None and charged == [1, 2, 3]

    ship_hangs_on.clear()
    async with serving(worker()):
        completed = await wait_until(lambda: run_of_item_3("COMPLETED"), timeout=20)
    assert charged == [1, 2, 3]  # item 3 was not charged again
    assert completed["resumed_from"] == crashed["id"]
    assert completed["result"] == orjson.dumps("shipped with receipt-3").decode()
    tasks = await table_rows(
        database_url, schema.task_runs, schema.task_runs.c.flow_run_id == completed["id"]
    )
    by_name = {t["task_name"]: t for t in tasks}
    assert by_name["charge_item"]["state_name"] == "Reused"
    assert by_name["charge_item"]["reused_from"] is not None
    assert by_name["ship_item"]["state_name"] == "Completed"


async def test_behind_an_event_never_acknowledged_the_saved_cursor_holds_and_memory_stays_flat(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    """`on_failure="stop"` keeps a failed event unacknowledged: polling goes on, the saved
    cursor stays before it, and the polls after it do not pile up in memory."""

    def one_more(request: Request) -> Reply:
        after = int(request.query.get("after") or 0)
        return Reply(json={"items": [{"id": after + 1}], "next_cursor": str(after + 1)})

    path = scripted.route("/stuck", one_more)

    @flow(name="http-stuck")
    async def fails_on_2(item: dict[str, Any]) -> None:
        if item["id"] == 2:
            raise ValueError("item 2 is bad")

    source = cursor_poller(feed.url, path)
    app = App(settings(sqlite_url))
    app.subscribe(
        source,
        fails_on_2,
        params=lambda event: {"item": orjson.loads(event.value)},
        on_failure="stop",
    )
    async with serving(app):
        await wait_until(lambda: source.stats.acked >= 150, timeout=60)
        assert await stored_cursor(sqlite_url) == "1"  # item 2's poll is never done with
        # the stuck poll, then the later ones merged whenever they pass the bound
        assert len(source._pages) <= _PAGES_BEFORE_COMPACTING + 1
