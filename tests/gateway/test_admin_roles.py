"""Named admin tokens with roles: viewer reads, operator changes routes and reloads,
admin does everything; each refusal names the role needed."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from kairos_client import KairosClient
from kairos_core import WhoAmI
from kairos_gateway.management.access import needed_role
from kairos_gateway.settings import SettingsError, parse_named_tokens

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, api_call, raw_request, route

ADMIN = "admin-token-0123456789"
VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"
FROM_ENV = "env-operator-token-0123456789"


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/api/routes", "viewer"),
        ("HEAD", "/api/config", "viewer"),
        ("GET", "/api/config/jwt", "viewer"),
        ("POST", "/api/routes", "operator"),
        ("POST", "/api/routes/validate", "operator"),
        ("PUT", "/api/routes/%2Fusers", "operator"),
        ("DELETE", "/api/routes/%2Fusers", "operator"),
        ("POST", "/api/config/reload", "operator"),
        ("PUT", "/api/config", "admin"),
        ("PUT", "/api/config/jwt", "admin"),
        ("PUT", "/api/config/rate_limit", "admin"),
        ("PUT", "/api/config/cors", "admin"),
    ],
)
def test_the_role_each_call_needs(method: str, path: str, role: str) -> None:
    assert needed_role(method, path) == role


def test_named_tokens_from_the_environment() -> None:
    tokens = parse_named_tokens(f" ci:operator:{FROM_ENV} , grafana:viewer:{VIEWER}:x ")
    assert [(t.name, t.role, t.token) for t in tokens] == [
        ("ci", "operator", FROM_ENV),
        ("grafana", "viewer", f"{VIEWER}:x"),  # a token may hold ':'
    ]
    assert parse_named_tokens("") == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (f"ci:boss:{FROM_ENV}", "entry 1 (ci): the role must be one of viewer, operator, admin"),
        ("ci:viewer:short", "entry 1 (ci): the token must be at least 16 characters"),
        (f"no spaces:viewer:{FROM_ENV}", "entry 1 must be name:role:token"),
        (f"a:viewer:{FROM_ENV},a:admin:{FROM_ENV}", "entry 2: the name 'a' is used twice"),
    ],
)
def test_bad_environment_tokens_are_named_never_echoed(raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_named_tokens(raw)
    assert message in str(caught.value)
    assert FROM_ENV not in str(caught.value)
    assert "short" not in str(caught.value).replace("the token must", "")


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@pytest.fixture
async def gateway(backend: EchoBackend, gateway_factory: GatewayFactory) -> RunningGateway:
    config: dict[str, Any] = {
        "version": 1,
        "routers": [route("/a", "/a", [backend])],
        "admin": {
            "token": ADMIN,
            "metrics_public": False,
            "tokens": [
                {"name": "dashboards", "token": VIEWER, "role": "viewer"},
                {
                    "name": "deployer",
                    "token_sha256": hashlib.sha256(OPERATOR.encode()).hexdigest(),
                    "role": "operator",
                },
            ],
        },
    }
    return await gateway_factory(config, admin_tokens=parse_named_tokens(f"ci:operator:{FROM_ENV}"))


def new_route(backend: EchoBackend, path: str) -> dict[str, Any]:
    return route(path, path, [backend])


async def test_a_viewer_reads_and_is_refused_changes(
    gateway: RunningGateway, backend: EchoBackend
) -> None:
    port = gateway.port
    assert (await api_call(port, "GET", "/api/routes", headers=bearer(VIEWER))).status == 200
    metrics = await raw_request(port, "/metrics", headers=bearer(VIEWER))
    assert metrics.status == 200
    for method, target, body in [
        ("POST", "/api/routes", new_route(backend, "/b")),
        ("DELETE", "/api/routes/%2Fa", None),
        ("POST", "/api/config/reload", None),
        ("PUT", "/api/config/cors", {"allowed_origins": ["https://x.example"]}),
    ]:
        resp = await api_call(port, method, target, body, headers=bearer(VIEWER))
        assert resp.status == 403, (method, target)
        problem = resp.json()
        assert problem["type"] == "forbidden"
        needed = "operator" if not target.startswith("/api/config/cors") else "admin"
        assert problem["detail"] == (
            f"this call needs the {needed} role; the token 'dashboards' has the viewer role"
        )
    routes = (await api_call(port, "GET", "/api/routes", headers=bearer(VIEWER))).json()
    assert [r["external_path"] for r in routes["routes"]] == ["/a"]


async def test_an_operator_changes_routes_but_not_settings(
    gateway: RunningGateway, backend: EchoBackend
) -> None:
    port = gateway.port
    for token in (OPERATOR, FROM_ENV):  # from admin.tokens (a digest) and the environment
        created = await api_call(
            port, "POST", "/api/routes", new_route(backend, f"/{token[:3]}"), headers=bearer(token)
        )
        assert created.status == 201
    assert (
        await api_call(port, "POST", "/api/config/reload", headers=bearer(OPERATOR))
    ).status != 403
    refused = await api_call(
        port, "PUT", "/api/config/cors", {"allowed_origins": ["*"]}, headers=bearer(OPERATOR)
    )
    assert refused.status == 403
    assert (
        "needs the admin role; the token 'deployer' has the operator role"
        in (refused.json()["detail"])
    )


async def test_the_single_admin_token_may_do_everything(gateway: RunningGateway) -> None:
    port = gateway.port
    resp = await api_call(
        port,
        "PUT",
        "/api/config/cors",
        {"allowed_origins": ["https://app.example"]},
        headers=bearer(ADMIN),
    )
    assert resp.status == 200


async def test_unknown_tokens_are_unauthorized_and_secrets_stay_redacted(
    gateway: RunningGateway,
) -> None:
    port = gateway.port
    assert (await api_call(port, "GET", "/api/routes", headers=bearer("x" * 24))).status == 401
    assert (await api_call(port, "GET", "/api/routes")).status == 401
    config = await api_call(port, "GET", "/api/config", headers=bearer(VIEWER))
    text = config.body.decode()
    assert VIEWER not in text
    assert hashlib.sha256(OPERATOR.encode()).hexdigest() not in text
    tokens = config.json()["admin"]["tokens"]
    assert [(t["name"], t["role"]) for t in tokens] == [
        ("dashboards", "viewer"),
        ("deployer", "operator"),
    ]


async def test_a_redacted_config_sent_back_keeps_every_token(gateway: RunningGateway) -> None:
    port = gateway.port
    shown = (await api_call(port, "GET", "/api/config", headers=bearer(ADMIN))).json()
    shown["routers"] = []
    assert (await api_call(port, "PUT", "/api/config", shown, headers=bearer(ADMIN))).status == 200
    for token in (VIEWER, OPERATOR, ADMIN, FROM_ENV):
        resp = await api_call(port, "GET", "/api/routes", headers=bearer(token))
        assert resp.status == 200, token
        assert resp.json()["routes"] == []


async def test_whoami_names_the_callers_token_and_role(
    gateway: RunningGateway, gateway_factory: GatewayFactory
) -> None:
    port = gateway.port
    for token, name, role in [
        (ADMIN, "admin", "admin"),
        (VIEWER, "dashboards", "viewer"),
        (OPERATOR, "deployer", "operator"),
        (FROM_ENV, "ci", "operator"),
    ]:
        async with KairosClient(gateway.url, token=token) as client:
            assert await client.whoami() == WhoAmI(name=name, role=role)
    assert (await api_call(port, "GET", "/api/whoami", headers=bearer("x" * 24))).status == 401
    refused = await api_call(port, "POST", "/api/whoami", headers=bearer(ADMIN))
    assert refused.status == 405
    open_gateway = await gateway_factory({"version": 1, "routers": []})
    loopback = await api_call(open_gateway.port, "GET", "/api/whoami")
    assert loopback.json() == {"name": "loopback", "role": "admin"}
