"""The OpenAPI document agrees with what the API does: declared statuses, the
validators' rules in the schemas, and the ETag format the docs describe."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from kairos_gateway.management import api
from kairos_gateway.management.schema_rules import DURATION, ETAG, HOST, PATH

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, api_call, raw_request, route

ROOT = Path(__file__).resolve().parents[2]


async def test_every_operation_taking_if_match_declares_412(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    doc = (await raw_request(gw.port, "/api/openapi.json")).json()
    taking = 0
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            names = [p["name"] for p in operation.get("parameters", [])]
            if "If-Match" in names:
                taking += 1
                assert "412" in operation["responses"], f"{method.upper()} {path}"
    assert taking >= 8


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("/", True),
        ("/api/users/{id}", True),
        ("/files/{*rest}", True),
        ("/v1.0/x", True),
        ("", False),
        ("api", False),
        ("/a//b", False),
        ("/a/../b", False),
        ("/{*rest}/x", False),
        ("/a?b", False),
    ],
)
def test_the_path_pattern(value: str, valid: bool) -> None:
    assert (re.fullmatch(PATH, value) is not None) is valid


def test_the_host_pattern() -> None:
    assert re.fullmatch(HOST, "http://users-service")
    assert re.fullmatch(HOST, "HTTPS://a.example")
    for bad in ("", "users", "ftp://a", "http://a:80", "http://a/b", "http://u@a"):
        assert re.fullmatch(HOST, bad) is None, bad


async def test_an_empty_external_path_is_invalid_in_the_document_and_refused(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    doc = (await raw_request(gw.port, "/api/openapi.json")).json()
    router = doc["components"]["schemas"]["Router"]["properties"]
    assert router["external_path"]["pattern"] == PATH
    resp = await api_call(
        gw.port, "POST", "/api/routes", {**route("/x", "/x", [backend]), "external_path": ""}
    )
    assert resp.status == 422


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("range=1h", 200),
        ("range=24h", 200),
        ("range=86400", 200),
        ("range=1440m&step=1m", 200),
        ("range=0.5d", 200),
        ("range=0", 400),
        ("range=0s", 400),
        ("range=86401", 400),
        ("range=24.5h", 400),
        ("range=1e3", 400),
        ("range=1h&route=%2Fa&backend=http%3A%2F%2Fa%3A1", 400),
        ("range=1h&colour=blue", 400),
    ],
)
async def test_history_query_follows_the_declared_pattern(
    gateway_factory: GatewayFactory, query: str, status: int
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, f"/api/metrics/history?{query}")
    assert resp.status == status, resp.body
    if "range=" in query and "&" not in query:
        value = query.split("=", 1)[1]
        assert (re.fullmatch(DURATION, value) is not None) is (status == 200)


async def test_the_etag_is_a_quoted_hash_as_documented(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    etag = (await raw_request(gw.port, "/api/routes")).header("ETag")
    assert etag is not None
    assert re.fullmatch(ETAG, etag), etag
    doc = (await raw_request(gw.port, "/api/openapi.json")).json()
    declared = doc["paths"]["/api/routes"]["get"]["responses"]["200"]["headers"]["ETag"]
    assert declared["schema"]["pattern"] == ETAG
    for page in (ROOT / "docs" / "admin-api.md", ROOT / "packages/kairos-client/README.md"):
        text = page.read_text()
        assert "<n>-<hash>" not in text, page
        for shown in re.findall(r'ETag: ("[^"]*")', text):
            assert re.fullmatch(ETAG, shown) or shown.endswith('..."'), (page, shown)


async def test_a_route_created_is_followed_by_the_declared_links(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    doc = (await raw_request(gw.port, "/api/openapi.json")).json()
    links = doc["paths"]["/api/routes"]["post"]["responses"]["201"]["links"]
    ids = {
        op["operationId"]
        for item in doc["paths"].values()
        for name, op in item.items()
        if name != "parameters" and "operationId" in op
    }
    assert {link["operationId"] for link in links.values()} <= ids
    created = await api_call(gw.port, "POST", "/api/routes", route("/l/{id}", "/l/{id}", [backend]))
    assert created.status == 201
    path = created.json()["external_path"]  # what $response.body#/external_path names
    got = await raw_request(gw.port, "/api/routes/" + quote(path, safe=""))
    assert got.status == 200


async def test_every_management_endpoint_is_in_the_document(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    doc = (await raw_request(gw.port, "/api/openapi.json")).json()
    served = set(re.findall(r'path == "(/api/[^"]+)"', Path(api.__file__).read_text()))
    assert "/api/audit" in served
    assert served - set(doc["paths"]) == set()


async def test_a_cache_purge_refuses_an_unknown_parameter(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, "/api/cache?tag=a&colour=blue", method="DELETE")
    assert resp.status == 400
    assert "colour" in resp.json()["detail"]
