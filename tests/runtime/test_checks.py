"""A subscription that cannot work is refused by `App.subscribe`, not once per event."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connectors.jsonl import JsonlSource
from connectors.kafka import KafkaSink, KafkaSource
from eventflow import App, ConfigurationError, flow


@flow(name="needs-a-socket")
def needs_a_socket(conn: socket.socket, x: int) -> int:
    return x


@flow(name="socket-optional")
def socket_optional(x: int, conn: socket.socket | None = None) -> int:
    return x


@flow(name="plain")
def plain(x: int) -> int:
    return x


def jsonl(tmp_path: Path) -> JsonlSource:
    (tmp_path / "in.jsonl").write_text("")
    return JsonlSource(str(tmp_path / "in.jsonl"))


def test_a_required_parameter_no_json_can_give_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        App().subscribe(jsonl(tmp_path), needs_a_socket, on_failure="skip")
    assert str(refused.value) == (
        "flow 'needs-a-socket' cannot run from events: its required parameter 'conn' is a "
        "socket, which no JSON event can give; give it a default, or supply it with params="
    )


def test_a_default_or_params_supply_what_json_cannot(tmp_path: Path) -> None:
    App().subscribe(jsonl(tmp_path), socket_optional, on_failure="skip")
    with socket.socket() as conn:
        App().subscribe(jsonl(tmp_path), needs_a_socket, on_failure="skip", params={"conn": conn})
    App().subscribe(jsonl(tmp_path), needs_a_socket, on_failure="skip", params=lambda e: {})


def test_dead_letter_without_a_destination_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="a JsonlSource has no dead-letter destination"):
        App().subscribe(jsonl(tmp_path), plain, on_failure="dead_letter")
    sink = KafkaSink("failed", bootstrap_servers="127.0.0.1:1")
    given = App().subscribe(jsonl(tmp_path), plain, on_failure="dead_letter", dead_letter=sink)
    assert given.on_failure == "dead_letter"


def test_the_default_policy_dead_letters_only_where_it_can(tmp_path: Path) -> None:
    assert App().subscribe(jsonl(tmp_path), plain).on_failure == "skip"
    kafka = KafkaSource("orders", bootstrap_servers="127.0.0.1:1", group_id="g")
    assert App().subscribe(kafka, plain).on_failure == "dead_letter"


def test_an_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="on_failure must be 'dead_letter', 'skip'"):
        App().subscribe(jsonl(tmp_path), plain, on_failure="retry")  # type: ignore[arg-type]
