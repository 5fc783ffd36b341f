"""CORS, body and header size limits, security headers: against a running gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, read_response, route

ORIGINS = ["https://app.example.com", "https://*.example.org"]


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **top}


# -- CORS ------------------------------------------------------------------------------


async def test_preflight_is_answered_by_the_gateway(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(
            # Protected: a preflight must still be answered, without a token.
            route("/x", "/x", [backend], methods=["PUT"]),
            cors={"allowed_origins": ORIGINS, "max_age": 120},
        )
    )
    resp = await raw_request(
        gw.port,
        "/x",
        method="OPTIONS",
        headers=[
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type, x-trace"),
        ],
    )
    assert resp.status == 204
    assert resp.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert "PUT" in (resp.header("Access-Control-Allow-Methods") or "")
    assert resp.header("Access-Control-Allow-Headers") == "content-type, x-trace"
    assert resp.header("Access-Control-Max-Age") == "120"
    assert resp.header("Vary") == "Origin"
    assert backend.requests == []


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),
        ("https://evil-example.org", False),
        ("http://app.example.com", False),
        ("https://app.example.com.evil.test", False),
        ("null", False),
    ],
)
async def test_origins(
    backend: EchoBackend, gateway_factory: GatewayFactory, origin: str, allowed: bool
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), cors={"allowed_origins": ORIGINS}))
    preflight = await raw_request(
        gw.port,
        "/x",
        method="OPTIONS",
        headers=[("Origin", origin), ("Access-Control-Request-Method", "GET")],
    )
    actual = await raw_request(gw.port, "/x", headers=[("Origin", origin)])
    assert actual.status == 200
    for resp in (preflight, actual):
        assert (resp.header("Access-Control-Allow-Origin") == origin) is allowed
        if not allowed:
            assert not [k for k, _ in resp.headers if k.lower().startswith("access-control-")]
        assert "Origin" in resp.header_all("Vary")


async def test_credentials_and_exposed_headers(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [backend]),
            cors={
                "allowed_origins": ["https://app.example.com"],
                "allow_credentials": True,
                "exposed_headers": ["X-Request-Id"],
            },
        )
    )
    resp = await raw_request(gw.port, "/x", headers=[("Origin", "https://app.example.com")])
    assert resp.header("Access-Control-Allow-Origin") == "https://app.example.com"
    assert resp.header("Access-Control-Allow-Credentials") == "true"
    assert resp.header("Access-Control-Expose-Headers") == "X-Request-Id"


async def test_route_can_opt_out_of_the_global_policy(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/open", "/open", [backend]),
            route("/closed", "/closed", [backend], cors=None),
            route("/own", "/own", [backend], cors={"allowed_origins": ["https://own.test"]}),
            cors={"allowed_origins": ["*"]},
        )
    )
    origin = [("Origin", "https://own.test")]
    assert (await raw_request(gw.port, "/open", headers=origin)).header(
        "Access-Control-Allow-Origin"
    ) == "*"
    assert (await raw_request(gw.port, "/closed", headers=origin)).header(
        "Access-Control-Allow-Origin"
    ) is None
    assert (await raw_request(gw.port, "/own", headers=origin)).header(
        "Access-Control-Allow-Origin"
    ) == "https://own.test"


# -- body size ---------------------------------------------------------------------------


async def test_content_length_over_the_limit_is_refused_before_the_body(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend], max_body_size=1000)))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        # Announce 10 MB but send nothing: the answer must come without the body.
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        resp = await asyncio.wait_for(read_response(reader), 5)
        assert resp.status == 413
        assert resp.json()["type"] == "payload_too_large"
        assert resp.header("Connection") == "close"
    finally:
        writer.close()
    assert backend.requests == []
    ok = await raw_request(gw.port, "/x", method="POST", body=b"x" * 1000)
    assert ok.status == 200


async def test_chunked_body_is_refused_once_it_passes_the_limit(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), max_body_size=64))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"40\r\n" + b"a" * 64 + b"\r\n")  # exactly at the limit: fine so far
        writer.write(b"1\r\nb\r\n")  # one byte too many
        resp = await asyncio.wait_for(read_response(reader), 5)
        assert resp.status == 413
        # The rest of the body is never read: the connection is closed.
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    assert backend.requests == []


# -- header size -------------------------------------------------------------------------


async def test_oversized_headers_get_431(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])), max_header_size=8192)
    resp = await raw_request(gw.port, "/x", headers=[("X-Big", "v" * 9000)])
    assert resp.status == 431
    assert resp.json()["type"] == "request_header_fields_too_large"
    # A 1 MB Authorization header is rejected just as cleanly.
    huge = await raw_request(
        gw.port, "/x", headers=[("Authorization", "Bearer " + "a" * 1_000_000)]
    )
    assert huge.status == 431
    assert backend.requests == []
    assert (await raw_request(gw.port, "/x")).status == 200


# -- security headers ---------------------------------------------------------------------


async def test_security_headers_are_added_unless_the_backend_set_them(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    resp = await raw_request(gw.port, "/x")
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("X-Frame-Options") == "DENY"
    assert resp.header("Referrer-Policy") == "no-referrer"
    assert resp.header("Content-Security-Policy") == "default-src 'none'; frame-ancestors 'none'"
    assert resp.header("Permissions-Policy")
    # Plain HTTP from an untrusted peer: HSTS would be meaningless.
    assert resp.header("Strict-Transport-Security") is None
    # Gateway-made responses carry them too.
    assert (await raw_request(gw.port, "/missing")).header("X-Frame-Options") == "DENY"


async def test_hsts_when_a_trusted_proxy_says_https(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), trusted_proxies=["127.0.0.1"]))
    resp = await raw_request(gw.port, "/x", headers=[("X-Forwarded-Proto", "https")])
    assert resp.header("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"


async def test_security_headers_are_configurable(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/x", "/x", [backend]),
            security_headers={"x_frame_options": "SAMEORIGIN", "content_security_policy": None},
        )
    )
    resp = await raw_request(gw.port, "/x")
    assert resp.header("X-Frame-Options") == "SAMEORIGIN"
    assert resp.header("Content-Security-Policy") is None
    off = await gateway_factory(
        cfg(route("/x", "/x", [backend]), security_headers={"enabled": False})
    )
    assert (await raw_request(off.port, "/x")).header("X-Content-Type-Options") is None


# -- route path options: encoded slashes in {param}, ';' path parameters ------------------


@pytest.mark.parametrize("target", ["/p/a%2Fb", "/p/a%2fb", "/p/a%5Cb", "/p/a%252Fb"])
async def test_an_encoded_slash_in_a_param_is_refused_unless_the_route_allows_it(
    backend: EchoBackend, gateway_factory: GatewayFactory, target: str
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/p/{id}", "/q/{id}", [backend]),
            route("/open/{id}", "/q/{id}", [backend], allow_encoded_slash=True),
        )
    )
    refused = await raw_request(gw.port, target)
    assert refused.status == 400
    assert refused.json()["type"] == "invalid_path"
    assert backend.requests == []
    allowed = await raw_request(gw.port, target.replace("/p/", "/open/"))
    assert allowed.status == 200
    assert allowed.json()["uri"] == target.replace("/p/", "/q/")  # as received


async def test_semicolon_params_pass_unless_the_route_refuses_them(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(
            route("/p/{id}", "/q/{id}", [backend]),
            route("/strict/{*rest}", "/q/{*rest}", [backend], path_params="refuse"),
        )
    )
    passed = await raw_request(gw.port, "/p/a;v=1")
    assert passed.status == 200
    assert passed.json()["uri"] == "/q/a;v=1"
    refused = await raw_request(gw.port, "/strict/a;v=1/b")
    assert refused.status == 400
    assert refused.json()["type"] == "invalid_path"
    assert (await raw_request(gw.port, "/strict/a/b")).status == 200
    # A parameter hiding a dot segment is refused on every route.
    assert (await raw_request(gw.port, "/p/..;x")).status == 400
    assert len(backend.requests) == 2


# -- Forwarded written by the gateway (forwarded_header) -----------------------------------


@pytest.mark.parametrize("trusted", [False, True])
async def test_the_gateway_writes_its_own_forwarded_when_configured(
    backend: EchoBackend, gateway_factory: GatewayFactory, trusted: bool
) -> None:
    proxies = {"trusted_proxies": ["127.0.0.0/8"]} if trusted else {}
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), forwarded_header=True, **proxies))
    claim = [("Forwarded", "for=10.0.0.1;proto=https")]
    resp = await raw_request(gw.port, "/x", headers=claim, host="api.example.test")
    sent = [v for k, v in resp.json()["headers"] if k.lower() == "forwarded"]
    ours = "for=127.0.0.1;proto=http;host=api.example.test"
    # From a trusted proxy its element is kept and ours appended; a client's is replaced.
    assert sent == ([f"for=10.0.0.1;proto=https, {ours}"] if trusted else [ours])
