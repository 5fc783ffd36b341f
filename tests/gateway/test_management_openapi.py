"""The OpenAPI document, and a property-based run of schemathesis against it.

Schemathesis' HTTP client is synchronous, so the run happens in a worker thread while
the gateway keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route

#: Examples per operation and generation mode: enough to find a crash, bounded in time.
EXAMPLES = 12


async def test_document_is_openapi_3_1_from_the_models(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, "/api/openapi.json")
    assert resp.status == 200
    doc = resp.json()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    assert {"GatewayConfig", "Router", "Problem", "ConfigStatus", "MetricsSnapshot"} <= set(schemas)
    assert "external_path" in schemas["Router"]["properties"]
    for path in (
        "/api/routes",
        "/api/routes/{route}",
        "/api/routes/validate",
        "/api/config",
        "/api/config/jwt",
        "/api/config/rate_limit",
        "/api/config/cors",
        "/api/config/status",
        "/api/config/reload",
        "/api/metrics",
        "/api/metrics/history",
        "/api/backends",
        "/api/plugins",
        "/api/events",
    ):
        assert path in doc["paths"], path


def _run(document: dict[str, Any], base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label == "GET /api/events":
            continue  # a stream open until shutdown (tests/gateway/test_events.py)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(base_url=base_url, checks=checks, timeout=10)

            try:
                check()
            except Unsatisfiable:
                pass  # nothing to make invalid (an operation without parameters)
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


async def test_schemathesis_finds_no_5xx_and_responses_conform(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(
        {"version": 1, "hot_reload": False, "routers": [route("/a", "/a", [backend])]}
    )
    document = (await raw_request(gw.port, "/api/openapi.json")).json()
    async with asyncio.timeout(120):
        failures = await asyncio.to_thread(_run, document, gw.url)
    assert failures == []
