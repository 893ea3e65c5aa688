"""`eventflow backfill`: a flow over a JSONL file or a Kafka range, resumably."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from .._errors import ConfigurationError, EventflowError
from .._loading import load_object
from .._settings import Settings
from ._database import database_option, resolve_database_url

if TYPE_CHECKING:
    from .._runtime._source import Source


def _connector(module: str, name: str) -> Callable[..., Source]:
    """A connector's source class, imported by name when a command needs it.

    The core imports no connector (they depend on it, not the other way round):
    like the user's app, a connector is loaded by its name.
    """
    source: Callable[..., Source] = getattr(importlib.import_module(module), name)
    return source


def _utc_time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command("backfill")
@click.argument("target")
@click.option("--jsonl", type=click.Path(exists=True, dir_okay=False), help="A JSONL file.")
@click.option("--kafka-topic", help="A Kafka topic (with an offset or time range).")
@click.option(
    "--bootstrap", envvar="EVENTFLOW_KAFKA_BOOTSTRAP", default="localhost:9092", show_default=True
)
@click.option("--partition", "partitions", type=int, multiple=True, help="Only these partitions.")
@click.option("--from-offset", type=click.IntRange(0), help="First offset (in every partition).")
@click.option("--to-offset", type=click.IntRange(0), help="End offset, exclusive.")
@click.option("--since", callback=_utc_time, help="First record time (ISO 8601; naive is UTC).")
@click.option("--until", callback=_utc_time, help="End record time, exclusive.")
@click.option("--group-id", help="Where progress is stored (default: backfill:<flow>:<input>).")
@click.option("--max-in-flight", default=64, show_default=True, type=click.IntRange(1))
@click.option("--dead-letter", type=click.Path(dir_okay=False), help="Append failures here.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@database_option
def backfill_command(
    target: str,
    jsonl: str | None,
    kafka_topic: str | None,
    bootstrap: str,
    partitions: tuple[int, ...],
    from_offset: int | None,
    to_offset: int | None,
    since: datetime | None,
    until: datetime | None,
    group_id: str | None,
    max_in_flight: int,
    dead_letter: str | None,
    no_progress: bool,
    database_url: str | None,
) -> None:
    """Run the flow at TARGET (path/to/file.py:flow) once per input event, resumably.

    Every event becomes a tracked run; failed ones are reported (exit status
    1) and never stop the backfill. Interrupted (SIGINT/SIGTERM, exit status
    130), the same command resumes where it stopped and runs nothing twice.
    """
    from .._backfill import backfill
    from .._flows import Flow

    if (jsonl is None) == (kafka_topic is None):
        raise click.UsageError("give one input: --jsonl FILE or --kafka-topic TOPIC")
    try:
        flow = load_object(target)
        if not isinstance(flow, Flow):
            raise ConfigurationError(f"{target} is a {type(flow).__name__}, not an eventflow flow")
        source: Source
        if jsonl is not None:
            source = _connector("connectors.jsonl", "JsonlSource")(jsonl, group_id=group_id)
        else:
            assert kafka_topic is not None
            source = _connector("connectors.kafka", "KafkaRangeSource")(
                kafka_topic,
                bootstrap_servers=bootstrap,
                group_id=group_id,
                partitions=partitions or None,
                from_offset=from_offset,
                to_offset=to_offset,
                since=since,
                until=until,
            )
        settings = Settings.from_env()
        if database_url:
            settings = replace(settings, database_url=resolve_database_url(database_url))
        result = backfill(
            flow,
            source,
            settings=settings,
            max_in_flight=max_in_flight,
            dead_letter_path=dead_letter,
            progress=not no_progress,
        )
    except EventflowError as error:
        raise click.ClickException(str(error)) from None
    click.echo(result.summary())
    if result.interrupted:
        sys.exit(130)
    if result.failed:
        sys.exit(1)
