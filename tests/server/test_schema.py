"""Every operation of the OpenAPI document, fuzzed by schemathesis against a store with real
runs: no 5xx, and every response conforms to the document."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from eventflow._server import create_app
from tests.server.conftest import Store

# the document does not depend on the store: building the app touches no database
schema = schemathesis.openapi.from_dict(create_app("sqlite://", migrate=False).openapi())


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case, server: str, store: Store
) -> None:
    case.call_and_validate(base_url=server, timeout=10)
