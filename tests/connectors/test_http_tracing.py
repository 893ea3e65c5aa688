"""Trace context over HTTP: a poll's response context reaches its runs' spans, eventflow's
requests (polls, webhooks) carry the current context; real servers on loopback."""

from __future__ import annotations

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from connectors.http import HttpPollSource
from eventflow import WebhookNotifier, flow
from eventflow._testing._spans import SpanCollector
from tests._kafka import wait_until
from tests._receiver import receiving
from tests.connectors._app import app_for, recording_flow, serving
from tests.connectors._servers import Reply, ScriptedApp, ServerThread, replies

SERVER_TRACE = "0af7651916cd43dd8448eb211c80319c"
SERVER_SPAN = "b7ad6b7169203331"


async def test_a_polls_runs_are_children_of_the_context_its_response_carries(
    feed: ServerThread, scripted: ScriptedApp, sqlite_url: str
) -> None:
    path = scripted.route(
        "/traced",
        replies(
            Reply(
                json={"orders": [{"id": "t1"}]},
                headers={"traceparent": f"00-{SERVER_TRACE}-{SERVER_SPAN}-01"},
            ),
            Reply(json={"orders": []}),
        ),
    )
    record, seen = recording_flow("http-traced")
    source = HttpPollSource(feed.url + path, interval=0.05, items="orders", id_field="id")
    collector = SpanCollector()
    collector.start()
    try:
        async with serving(app_for(sqlite_url, source, record)):
            await wait_until(lambda: collector.spans(), timeout=20)
    finally:
        collector.stop()
    assert [item["id"] for item in seen] == ["t1"]
    (span,) = collector.spans()
    assert span.kind is SpanKind.CONSUMER and span.context is not None
    assert f"{span.context.trace_id:032x}" == SERVER_TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == SERVER_SPAN
    assert span.attributes is not None and "messaging.system" not in span.attributes


async def test_a_poll_request_carries_the_current_context(
    feed: ServerThread, scripted: ScriptedApp
) -> None:
    path = scripted.route("/outgoing", replies(Reply(json=[])))
    source = HttpPollSource(feed.url + path, id_field="id")
    collector = SpanCollector()
    collector.start()
    try:
        tracer = collector.provider.get_tracer("test")
        with tracer.start_as_current_span("caller") as caller:
            async with httpx.AsyncClient() as client:
                await source.poll(client)
    finally:
        collector.stop()
    (request,) = scripted.requests_to(path)
    context = caller.get_span_context()
    assert request.headers["traceparent"].startswith(
        f"00-{context.trace_id:032x}-{context.span_id:016x}-"
    )


def test_a_failure_hooks_webhook_carries_the_runs_trace_context(default_store: str) -> None:
    with receiving() as receiver:
        notifier = WebhookNotifier(receiver.url, backoff=0.01)

        @flow(name="notifying", on_failure=[notifier])
        def notifying() -> None:
            raise RuntimeError("down")

        collector = SpanCollector()
        collector.start()
        try:
            state = notifying(return_state=True)
        finally:
            collector.stop()
        notifier.close()
        assert state.is_failed()
        (span,) = collector.spans()
        assert span.context is not None
        (headers,) = receiver.headers
        assert headers["traceparent"].startswith(
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
        )
    assert trace.get_current_span().get_span_context().is_valid is False
