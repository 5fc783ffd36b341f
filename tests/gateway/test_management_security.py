"""Admin security: tokens, loopback-only without one, the admin listener, /metrics."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket

import pytest
from kairos_core import load_config
from kairos_gateway import AccessLog, Gateway, GatewaySettings

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, non_loopback_address, raw_request, route

TOKEN = "admin-token-" + "z" * 24


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def config(**extra: object) -> dict[str, object]:
    return {"version": 1, "routers": [], **extra}


@pytest.mark.parametrize(
    "admin", [{"token": TOKEN}, {"token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]
)
async def test_token_from_config(gateway_factory: GatewayFactory, admin: dict[str, str]) -> None:
    gw = await gateway_factory(config(admin=admin))
    missing = await raw_request(gw.port, "/api/routes")
    assert missing.status == 401
    assert (missing.header("WWW-Authenticate") or "").startswith("Bearer")
    assert (await raw_request(gw.port, "/api/routes", headers=bearer("wrong"))).status == 401
    assert (await raw_request(gw.port, "/api/routes", headers=bearer(TOKEN))).status == 200
    basic = [("Authorization", f"Basic {TOKEN}")]
    assert (await raw_request(gw.port, "/api/routes", headers=basic)).status == 401
    for open_path in ("/health", "/ready", "/live", "/metrics"):
        assert (await raw_request(gw.port, open_path)).status == 200


async def test_environment_token_wins(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config(admin={"token": TOKEN}), admin_token="from-env-token")
    assert (await raw_request(gw.port, "/api/routes", headers=bearer(TOKEN))).status == 401
    ok = await raw_request(gw.port, "/api/routes", headers=bearer("from-env-token"))
    assert ok.status == 200


async def test_token_change_applies_to_the_next_call(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config())
    assert (await raw_request(gw.port, "/api/routes")).status == 200  # loopback, no token
    resp = await raw_request(
        gw.port,
        "/api/config",
        method="PUT",
        body=f'{{"version": 1, "routers": [], "admin": {{"token": "{TOKEN}"}}}}'.encode(),
        headers=[("Content-Type", "application/json")],
    )
    assert resp.status == 200
    assert TOKEN.encode() not in resp.body
    assert (await raw_request(gw.port, "/api/routes")).status == 401
    assert (await raw_request(gw.port, "/api/routes", headers=bearer(TOKEN))).status == 200


async def test_without_token_only_loopback_clients() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    # Bound to every address, so the same gateway is reachable as loopback and not.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    gateway = Gateway(
        load_config(config()), GatewaySettings(), access_log=AccessLog(io.BytesIO(), "json")
    )
    await gateway.start([sock])
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                writer.write(b"GET /api/routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = (await reader.readuntil(b"\r\n")).decode()
            finally:
                writer.close()
                await writer.wait_closed()
        assert head.split()[1] == "403"
        assert (await raw_request(port, "/api/routes")).status == 200
        assert (await raw_request(port, "/health")).status == 200
    finally:
        await gateway.stop(drain_timeout_s=1)


async def test_metrics_can_be_restricted(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config(admin={"token": TOKEN, "metrics_public": False}))
    denied = await raw_request(gw.port, "/metrics")
    assert denied.status == 401
    assert denied.header("WWW-Authenticate")
    allowed = await raw_request(gw.port, "/metrics", headers=bearer(TOKEN))
    assert allowed.status == 200
    assert b"kairos_requests" in allowed.body
    assert (await raw_request(gw.port, "/health")).status == 200


async def test_separate_admin_listener(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        config(
            admin={"listen": "127.0.0.1:0"},
            routers=[route("/api/{*rest}", "/{*rest}", [backend])],
        )
    )
    [(_, admin_port)] = gw.gateway.admin_addresses
    on_proxy = await raw_request(gw.port, "/api/routes")
    assert on_proxy.status == 404
    assert on_proxy.header("X-Backend") is None
    assert backend.requests == []
    assert (await raw_request(gw.port, "/api/users")).status == 200  # proxying goes on

    on_admin = await raw_request(admin_port, "/api/routes")
    assert on_admin.status == 200
    assert on_admin.json()["routes"][0]["external_path"] == "/api/{*rest}"
    assert (await raw_request(admin_port, "/health")).status == 200
    assert (await raw_request(admin_port, "/api/users")).status == 404  # never proxied
    assert len(backend.requests) == 1


@pytest.mark.parametrize(
    "host",
    ["rebound.example.com", "rebound.example.com:5900", "127.0.0.1.nip.io", "[::2]", "0.0.0.0"],
)
async def test_without_token_a_foreign_host_name_is_refused(
    gateway_factory: GatewayFactory, host: str
) -> None:
    """DNS rebinding: a page whose own name resolves to 127.0.0.1 reaches the gateway
    over loopback, but its requests say whose name they are for."""
    gw = await gateway_factory(config())
    body = b'{"external_path": "/x", "internal_path": "/", "methods": ["GET"], '
    body += b'"backends": [{"host": "http://10.0.0.1", "port": 80}]}'
    json_type = [("Content-Type", "application/json")]
    created = await raw_request(
        gw.port, "/api/routes", method="POST", headers=json_type, body=body, host=host
    )
    assert created.status == 403
    assert "Host header" in created.json()["detail"]
    assert gw.gateway.runtime.snapshot.config.routers == []  # nothing was created
    assert (await raw_request(gw.port, "/api/routes", host=host)).status == 403


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST:5900", "127.0.0.1", "127.1.2.3:80", "[::1]:5900", "ui.localhost"],
)
async def test_without_token_loopback_names_are_served(
    gateway_factory: GatewayFactory, host: str
) -> None:
    gw = await gateway_factory(config())
    assert (await raw_request(gw.port, "/api/routes", host=host)).status == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://rebound.example.com", 403),
        ("https://evil.example:8443", 403),
        ("null", 403),
        ("http://localhost:3000", 200),
        ("http://127.0.0.1:5900", 200),
        ("http://[::1]:3000", 200),
    ],
)
async def test_without_token_only_loopback_origins(
    gateway_factory: GatewayFactory, origin: str, status: int
) -> None:
    """A cross-site page (or a rebound one) sends its Origin; loopback tools send none."""
    gw = await gateway_factory(config())
    answer = await raw_request(gw.port, "/api/routes", headers=[("Origin", origin)])
    assert answer.status == status
    if status == 403:
        assert "Origin" in answer.json()["detail"]


async def test_with_a_token_any_host_name_may_be_used(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config(admin={"token": TOKEN}))
    answer = await raw_request(
        gw.port, "/api/routes", host="gateway.example.com", headers=bearer(TOKEN)
    )
    assert answer.status == 200
    assert (await raw_request(gw.port, "/api/routes", host="gateway.example.com")).status == 401
