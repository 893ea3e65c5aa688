"""Publishing from flows exactly once: messages kept with the run, sent after it completed.

`publish` (what `KafkaSink.publish` calls) does no I/O: it appends the message
to its flow run's context, with an id derived from the run's event (the same
for every run of that event) and the place of the call (the task call's
position and the message's number in it). When the run completes, its
messages go into the row of its COMPLETED state, and the writer inserts them
into table `outbox` in the same transaction, only if the run's stored row is
COMPLETED then (eventflow/_store/_outbox.py): a run that crashes, fails or
is fenced publishes nothing, and the same id twice is stored once. A relay
per destination sends them in `seq` order (eventflow/_runtime/_relay.py).

A task that published keeps no result: a resumed run calls it again (it
publishes the same messages, with the same ids) instead of reusing a result
without its messages.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ._context import current_flow_run, current_task_run
from ._errors import EventflowError

if TYPE_CHECKING:
    from ._context import FlowRunContext
    from ._engine import EventInfo

MESSAGE_ID_HEADER = "eventflow-message-id"
"""The header every published message carries: its id, the same on any republish."""
ATTEMPT_HEADER = "eventflow-outbox-attempt"
"""The relay's transaction that sent it (`<destination>:<number>`), for diagnosis."""


class PublishError(EventflowError):
    """A message that cannot be published: outside a flow run, or never deliverable."""


def run_identity(
    flow_name: str, run_id: str, event: EventInfo | None, parent: FlowRunContext | None
) -> str:
    """What the ids of a run's messages derive from: its event's identity (every run of
    the event, resumed or fenced and run again, gets the same), its parent's for a
    subflow, else its own id."""
    if parent is not None:
        return f"{parent.identity}\x1f{flow_name}-{parent.next_task_index('flow:' + flow_name)}"
    if event is not None:
        return "\x1f".join((flow_name, event.group or "", event.source, event.id))
    return run_id


def message_id(identity: str, place: str, number: int) -> str:
    digest = hashlib.sha256(f"{identity}\x1f{place}\x1f{number}".encode())
    return digest.hexdigest()[:32]


def publish(
    destination: str,
    value: bytes,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> str:
    """Keep a message for `destination` in the current flow run; its id.

    PublishError outside a flow run (use the sink's `send` there).
    """
    run = current_flow_run.get()
    if run is None:
        raise PublishError(
            f"publish to {destination} outside a flow run: a message is published once its"
            " run completes; use send() to publish at once"
        )
    task = current_task_run.get()
    place = "f"  # the flow's body
    if task is not None and task.flow_run is run:
        place = _place(task)
    outer: Any = task
    while outer is not None:  # its result and its callers' (around a subflow too) are not kept
        outer.flow_run.published_in.add(outer.task_run_id)
        outer = outer.outer
    number = run.publish_calls.get(place, 0)
    run.publish_calls[place] = number + 1
    identity = run.identity or run.flow_run_id
    mid = message_id(identity, place, number)
    run.outbox.append(
        {
            "message_id": mid,
            "destination": destination,
            "flow_run_id": run.flow_run_id,
            "key": key,
            "value": value,
            "headers": encode_headers(headers) if headers else None,
            "created_at": time.time(),
        }
    )
    return mid


def _place(task: Any) -> str:
    """A task call's place: its position, or (a task called in a task) the position of
    the task it runs in and its own name."""
    names = []
    while task.position is None and task.outer is not None:
        names.append(task.task_name)
        task = task.outer
    return "/".join([f"t{task.position}", *reversed(names)])


def keep_published(run: FlowRunContext, row: dict[str, Any], parent: FlowRunContext | None) -> None:
    """The run completed: its messages go with its COMPLETED row (a subflow's, with
    its parent's messages)."""
    if parent is not None:
        parent.outbox.extend(run.outbox)
    else:
        row["outbox"] = list(run.outbox)


def outbox_headers(message_id: str, destination: str, attempt: int) -> list[tuple[str, bytes]]:
    """The headers the relay adds to a message it sends."""
    return [
        (MESSAGE_ID_HEADER, message_id.encode()),
        (ATTEMPT_HEADER, f"{destination}:{attempt}".encode()),
    ]


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    return orjson.dumps([[name, value.hex()] for name, value in headers]).decode()


def decode_headers(text: str | None) -> list[tuple[str, bytes]]:
    if not text:
        return []
    return [(name, bytes.fromhex(value)) for name, value in orjson.loads(text)]


class Transport(Protocol):
    """How a relay sends messages to one destination, all or none of a batch at once.

    `committed` is the number of the last batch the destination took (read from
    the destination itself, after fencing any earlier sender): so a batch sent
    before a crash and not yet marked in the store is not sent twice.
    """

    async def start(self) -> None: ...

    async def committed(self) -> int: ...

    async def send(self, rows: Sequence[dict[str, Any]], attempt: int) -> None: ...

    async def stop(self) -> None: ...


DESTINATIONS: dict[str, Callable[[], Transport]] = {}
"""Each destination flows publish to (`kafka:<topic>`): how to make its relay's
transport. A sink registers itself when made; a worker relays every one."""


def register(destination: str, transport: Callable[[], Transport]) -> None:
    DESTINATIONS.setdefault(destination, transport)
