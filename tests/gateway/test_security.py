"""JWT authentication and rate limiting through a running gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from kairos_core import ConfigError, load_config

from tests.conftest import BackendFactory, GatewayFactory, RunningGateway
from tests.gateway.test_ops import sample
from tests.redis_server import RedisServer
from tests.support import (
    EchoBackend,
    RawResponse,
    gateway_process,
    raw_request,
    read_response,
    route,
)

SECRET = "k" * 48
OTHER_SECRET = "z" * 48


def token(claims: dict[str, Any] | None = None, *, key: str = SECRET, alg: str = "HS256") -> str:
    now = int(time.time())
    body = {"sub": "alice", "iat": now, "exp": now + 300, **(claims or {})}
    return jwt.encode(body, key, algorithm=alg)


def bearer(value: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {value}")]


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "jwt_secret": SECRET, "routers": list(routes), **top}


def upstream_headers(resp: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


@pytest.fixture
async def protected(backend: EchoBackend, gateway_factory: GatewayFactory) -> RunningGateway:
    return await gateway_factory(
        cfg(
            route("/open", "/open", [backend]),
            route("/private", "/private", [backend], auth_required=True),
            route(
                "/admin",
                "/admin",
                [backend],
                auth_required=True,
                required_claims={"roles": ["admin", "ops"]},
                forward_claims={"sub": "X-User"},
                strip_authorization=True,
            ),
        )
    )


# -- JWT --------------------------------------------------------------------------------


async def test_valid_token_is_forwarded(protected: RunningGateway, backend: EchoBackend) -> None:
    value = token()
    resp = await raw_request(protected.port, "/private", headers=bearer(value))
    assert resp.status == 200
    assert upstream_headers(resp)["authorization"] == [f"Bearer {value}"]
    # Scheme names are case-insensitive.
    lower = await raw_request(
        protected.port, "/private", headers=[("Authorization", f"bearer {value}")]
    )
    assert lower.status == 200


async def test_missing_token_is_401_with_a_bearer_challenge(protected: RunningGateway) -> None:
    resp = await raw_request(protected.port, "/private")
    assert resp.status == 401
    assert resp.header("WWW-Authenticate") == 'Bearer realm="kairos"'
    assert resp.header("Content-Type") == "application/problem+json"
    assert resp.json()["type"] == "unauthorized"
    assert (await raw_request(protected.port, "/open")).status == 200


def _unsigned(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: "not-a-token", "invalid_token"),
        (lambda: token({"exp": int(time.time()) - 3600}), "invalid_token"),
        (lambda: token({"nbf": int(time.time()) + 3600}), "invalid_token"),
        (lambda: token(key=OTHER_SECRET), "invalid_token"),
        (lambda: token()[:-4] + "AAAA", "invalid_token"),
        # An unsigned token has an empty third segment: malformed, an invalid token.
        (lambda: _unsigned({"sub": "alice", "exp": int(time.time()) + 300}), "invalid_token"),
    ],
    ids=["malformed", "expired", "not-yet-valid", "wrong-key", "tampered", "alg-none"],
)
async def test_bad_tokens_are_401_invalid(
    protected: RunningGateway, backend: EchoBackend, make: Any, error: str
) -> None:
    resp = await raw_request(protected.port, "/private", headers=bearer(make()))
    assert resp.status == 401
    assert resp.header("WWW-Authenticate") == f'Bearer realm="kairos", error="{error}"'
    assert backend.requests == []


async def test_token_in_the_query_string_is_ignored(protected: RunningGateway) -> None:
    resp = await raw_request(protected.port, f"/private?access_token={token()}")
    assert resp.status == 401


async def test_a_1mb_authorization_header_is_refused_cleanly(protected: RunningGateway) -> None:
    resp = await raw_request(protected.port, "/private", headers=bearer("a" * 1_000_000))
    assert resp.status == 431
    assert (await raw_request(protected.port, "/private", headers=bearer(token()))).status == 200


async def test_route_claims_give_403_insufficient_scope(protected: RunningGateway) -> None:
    resp = await raw_request(protected.port, "/admin", headers=bearer(token({"roles": ["viewer"]})))
    assert resp.status == 403
    assert resp.header("WWW-Authenticate") == 'Bearer realm="kairos", error="insufficient_scope"'
    ok = await raw_request(protected.port, "/admin", headers=bearer(token({"roles": ["ops"]})))
    assert ok.status == 200


async def test_claims_forwarded_and_forgeries_removed(protected: RunningGateway) -> None:
    resp = await raw_request(
        protected.port,
        "/admin",
        headers=[*bearer(token({"roles": "admin"})), ("X-User", "mallory")],
    )
    assert resp.status == 200
    seen = upstream_headers(resp)
    assert seen["x-user"] == ["alice"]  # from the verified token, never the client
    assert "authorization" not in seen  # strip_authorization


# -- rate limiting --------------------------------------------------------------------------


async def test_fixed_window_limit_with_ietf_headers(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    limit = {"algorithm": "fixed_window", "requests_per_window": 3, "window_seconds": 60}
    gw = await gateway_factory(
        cfg(route("/x", "/x", [backend], rate_limit={**limit, "legacy_headers": True}))
    )
    for remaining in (2, 1, 0):
        resp = await raw_request(gw.port, "/x")
        assert resp.status == 200
        assert resp.header("RateLimit-Policy") == '"/x";q=3;w=60'
        ratelimit = resp.header("RateLimit") or ""
        assert ratelimit.startswith(f'"/x";r={remaining};t=')
        assert 0 < int(ratelimit.rsplit("t=", 1)[1]) <= 60
        assert resp.header("X-RateLimit-Limit") == "3"
        assert resp.header("X-RateLimit-Remaining") == str(remaining)
    refused = await raw_request(gw.port, "/x")
    assert refused.status == 429
    assert refused.json()["type"] == "rate_limited"
    assert 1 <= int(refused.header("Retry-After") or 0) <= 60
    assert refused.header_all("Retry-After") == [refused.header("Retry-After")]
    assert refused.header("RateLimit") is not None
    assert len(backend.requests) == 3
    text = (await raw_request(gw.port, "/metrics")).body.decode()
    assert sample(text, "kairos_rate_limited_total", route="/x") == 1


async def test_user_keyed_limits_count_each_subject(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    limit = {
        "algorithm": "token_bucket",
        "requests_per_second": 0.01,
        "burst_size": 2,
        "key": "user",
    }
    gw = await gateway_factory(
        cfg(route("/x", "/x", [backend], auth_required=True, rate_limit=limit))
    )
    for user in ("alice", "bob"):
        for _ in range(2):
            assert (
                await raw_request(gw.port, "/x", headers=bearer(token({"sub": user})))
            ).status == 200
        assert (
            await raw_request(gw.port, "/x", headers=bearer(token({"sub": user})))
        ).status == 429


async def test_global_limit_is_shared_and_routes_can_opt_out(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/a", "/a", [backend]),
            route("/b", "/b", [backend]),
            route("/free", "/free", [backend], rate_limit=None),
            rate_limit={
                "algorithm": "sliding_window",
                "requests_per_window": 2,
                "window_seconds": 60,
            },
        )
    )
    assert (await raw_request(gw.port, "/a")).status == 200
    assert (await raw_request(gw.port, "/b")).status == 200
    assert (await raw_request(gw.port, "/a")).status == 429  # one budget for the client
    for _ in range(5):
        free = await raw_request(gw.port, "/free")
        assert free.status == 200
        assert free.header("RateLimit") is None


async def test_redis_unreachable_allows_or_denies_as_configured(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    from tests.support import unused_port

    dead = f"redis://127.0.0.1:{unused_port()}/0"
    base = {
        "requests_per_second": 100,
        "backend": "redis",
        "redis_url": dead,
        "redis_timeout_ms": 50,
    }
    gw = await gateway_factory(
        cfg(
            route("/allow", "/allow", [backend], rate_limit={**base, "on_redis_error": "allow"}),
            route("/deny", "/deny", [backend], rate_limit={**base, "on_redis_error": "deny"}),
        )
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await raw_request(gw.port, "/allow")).status == 200
    denied = await raw_request(gw.port, "/deny")
    assert denied.status == 503
    assert loop.time() - started < 3  # bounded, never a hang
    text = (await raw_request(gw.port, "/metrics")).body.decode()
    assert (sample(text, "kairos_rate_limit_store_errors_total") or 0) >= 1


async def test_two_gateway_processes_share_one_redis_limit(
    tmp_path: Path, backend_factory: BackendFactory, redis_server: RedisServer
) -> None:
    backend = await backend_factory()
    limit = {
        "algorithm": "fixed_window",
        "requests_per_window": 20,
        "window_seconds": 300,
        "backend": "redis",
        "redis_url": redis_server.url,
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg(route("/x", "/x", [backend], rate_limit=limit))))
    async with (
        gateway_process("--config", str(config), cwd=tmp_path) as (_, port_a, _a),
        gateway_process("--config", str(config), cwd=tmp_path) as (_, port_b, _b),
    ):
        statuses: list[int] = []

        async def client(port: int) -> None:
            for _ in range(20):
                statuses.append((await raw_request(port, "/x")).status)

        await asyncio.gather(client(port_a), client(port_b), client(port_a), client(port_b))
    assert statuses.count(200) == 20
    assert statuses.count(429) == 60
    assert len(backend.requests) == 20


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("CONNECT", "/tunnel", 405),  # origin-form: the route exists, the method never
        ("TRACE", "/tunnel", 405),
        ("CONNECT", "internal.example:443", 400),  # authority-form
        ("GET", "http://internal.example/tunnel", 400),  # absolute-form
    ],
)
async def test_connect_trace_and_absolute_form_are_never_proxied(
    backend: EchoBackend, gateway_factory: GatewayFactory, method: str, target: str, status: int
) -> None:
    gw = await gateway_factory({"routers": [route("/tunnel", "/tunnel", [backend])]})
    answer = await raw_request(gw.port, target, method=method)
    assert answer.status == status
    assert backend.requests == []


@pytest.mark.parametrize("method", ["CONNECT", "trace"])
def test_routes_may_not_list_connect_or_trace(method: str) -> None:
    config = {"routers": [route("/a", "/a", ["http://127.0.0.1:1"], methods=["GET", method])]}
    with pytest.raises(ConfigError) as info:
        load_config(config)
    (error,) = info.value.errors
    assert error.path == "routers[0].methods[1]"
    assert "never proxied" in error.message


@pytest.mark.parametrize(
    "target",
    [
        "/pub/..;/secret/x",  # a Tomcat/Spring backend drops ";": /internal/secret/x
        "/pub/%2e%2e;x/secret/x",
        "/pub/a%00b",
        "/pub/%c0%ae%c0%ae/secret/x",
        "/pub/%u002e%u002e/secret/x",
    ],
)
async def test_hostile_paths_never_reach_a_backend(
    backend: EchoBackend, gateway_factory: GatewayFactory, target: str
) -> None:
    config = {"routers": [route("/pub/{*rest}", "/internal/pub/{*rest}", [backend])]}
    gw = await gateway_factory(config)
    answer = await raw_request(gw.port, target)
    assert answer.status == 400
    assert answer.json()["type"] == "invalid_path"
    assert backend.requests == []


async def _send_raw(port: int, head: bytes) -> RawResponse:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /x HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a.test/../b\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a test\r\n\r\n", 400),
        (b"GET /x HTTP/1.1\r\nHost: a.test:80x\r\n\r\n", 400),
        (b"GET /x HTTP/1.0\r\n\r\n", 200),  # HTTP/1.0 may leave it out
        (b"GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200),
        (b"GET /x HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n", 200),
    ],
)
async def test_host_header_rules(
    backend: EchoBackend, gateway_factory: GatewayFactory, head: bytes, status: int
) -> None:
    gw = await gateway_factory({"routers": [route("/x", "/x", [backend])]})
    answer = await _send_raw(gw.port, head)
    assert answer.status == status
    assert len(backend.requests) == (1 if status == 200 else 0)


async def test_request_line_counts_in_the_header_limit(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"routers": [route("/x/{*rest}", "/x/{*rest}", [backend])]})
    long_target = "/x/" + "a" * (1024 * 1024)
    answer = await raw_request(gw.port, long_target)
    assert answer.status == 414
    assert answer.json()["type"] == "uri_too_long"
    # Target and headers together over the limit (64 KiB): 431.
    half = "/x/" + "a" * (40 * 1024)
    answer = await raw_request(gw.port, half, headers=[("X-Pad", "b" * 30 * 1024)])
    assert answer.status == 431
    assert backend.requests == []
    lines = gw.access_lines()
    assert max(len(line) for line in lines) < 4096  # the refused path is not logged whole


async def test_an_empty_line_before_the_request_line_is_ignored(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request."""
    gw = await gateway_factory({"routers": [route("/x", "/x", [backend])]})
    answer = await _send_raw(gw.port, b"\r\nGET /x HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert answer.status == 200
    assert len(backend.requests) == 1
