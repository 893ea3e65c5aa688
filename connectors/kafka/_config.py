"""How to reach the brokers: addresses, TLS and SASL, shared by sources and sinks."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context

from eventflow import ConfigurationError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How to reach the cluster, shared by sources and sinks (passed through to aiokafka)."""

    bootstrap_servers: str | Sequence[str] = "localhost:9092"
    client_id: str = "eventflow"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    request_timeout_ms: int = 40_000

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        context = self.ssl_context
        if context is None and (self.ssl_cafile or self.ssl_certfile):
            context = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = context or create_ssl_context()
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ConfigurationError(f"{self.security_protocol} needs a sasl_mechanism")
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_plain_username
            options["sasl_plain_password"] = self.sasl_plain_password
        return options

    def __repr__(self) -> str:  # never print the password
        return f"KafkaConnection({self.bootstrap_servers!r}, {self.security_protocol})"


def _connection(
    connection: KafkaConnection | None, bootstrap_servers: str | Sequence[str] | None
) -> KafkaConnection:
    if connection is not None:
        if bootstrap_servers is not None:
            raise ConfigurationError("give bootstrap_servers or connection, not both")
        return connection
    return KafkaConnection(bootstrap_servers=bootstrap_servers or "localhost:9092")
