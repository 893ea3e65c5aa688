"""Kafka's errors as eventflow's: aiokafka's never leave this package; every call to
the broker is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from eventflow import EventflowError
from eventflow.runtime import quiet_library_logs

logger = logging.getLogger("eventflow.kafka")


# aiokafka logs every failed connection attempt (thousands in a one-minute outage);
# the source's outage log says what matters: lost, still lost every 30 s, back
quiet_library_logs("aiokafka")


CALL_TIMEOUT = 15.0
"""Seconds any single call to the broker may take before it counts as failed."""


T = TypeVar("T")


class KafkaBrokerError(EventflowError):
    """Kafka (through aiokafka) reported an error; the message names aiokafka's.

    aiokafka's errors do not leave this module: they become this class or a
    narrower one, so the runtime logs one line for them, not a traceback.
    """


class KafkaStalledError(KafkaBrokerError):
    """The consumer stopped receiving records it should receive; it is replaced."""


class KafkaUnavailableError(KafkaBrokerError):
    """The broker did not answer in time (or refused); the source retries quietly."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """aiokafka's errors raised in the block, as KafkaBrokerError (`what` failed)."""
    try:
        yield
    except KafkaError as error:
        raise KafkaBrokerError(f"{what}: {type(error).__name__}: {error}") from error


async def _bounded(call: Awaitable[T], what: str, timeout: float = CALL_TIMEOUT) -> T:
    """`call`, or KafkaUnavailableError after `timeout` seconds or on any broker error."""
    try:
        return await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise KafkaUnavailableError(f"{what}: no answer from the broker in {timeout:g}s") from None
    except KafkaError as error:
        raise KafkaUnavailableError(f"{what}: {type(error).__name__}: {error}") from error


async def _stop_client(client: AIOKafkaConsumer | AIOKafkaProducer, what: str) -> None:
    """Stop a consumer or producer within CALL_TIMEOUT (leaving a group needs the broker).

    A client that cannot stop cleanly is abandoned with a warning: the caller
    is replacing it, and must not fail for it.
    """
    try:
        await asyncio.wait_for(client.stop(), CALL_TIMEOUT)
    except TimeoutError:
        logger.warning("%s: not stopped cleanly in %gs (broker unreachable)", what, CALL_TIMEOUT)
    except KafkaError as error:
        logger.warning("%s: not stopped cleanly: %s", what, error)
    except asyncio.CancelledError:
        if _cancelled():
            raise
        # aiokafka re-raises the CancelledError its coordination task ended with
        logger.warning("%s: not stopped cleanly: its group coordination was cancelled", what)


def _cancelled() -> bool:
    """True if the running task is being cancelled (by its owner, not by a library)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
