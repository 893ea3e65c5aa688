"""docker-compose.kafka.yml: no Docker engine here, so check what `docker compose config` would."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.kafka.yml"


def test_compose_file_runs_a_kraft_broker_and_postgres() -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    kafka = document["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "9092:9092" in kafka["ports"]
    postgres = document["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_DB"] == "eventflow"
    for service in document["services"].values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in document["volumes"]
