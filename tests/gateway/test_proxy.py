"""The data path end to end: a real gateway in front of real backends on loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import BackendFactory, GatewayFactory
from tests.support import EchoBackend, raw_request, read_response, route, unused_port


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **top}


def headers_of(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_path_parameters_and_query_reach_the_backend(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(route("/api/users/{id}/posts/{post}", "/v1/user/{id}/p/{post}", [backend]))
    )
    resp = await raw_request(gw.port, "/api/users/123/posts/456?expand=1&q=a%20b")
    assert resp.status == 200
    assert resp.json()["uri"] == "/v1/user/123/p/456?expand=1&q=a%20b"


async def test_params_are_substituted_without_decoding(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/cats/{id}", "/{id}", [backend])))
    resp = await raw_request(gw.port, "/cats/test%20space")
    assert resp.json()["uri"] == "/test%20space"


async def test_tail_route_forwards_the_rest_of_the_path(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/static/{*path}", "/assets/{*path}", [backend])))
    resp = await raw_request(gw.port, "/static/css/site.css?v=2")
    assert resp.json()["uri"] == "/assets/css/site.css?v=2"


@pytest.mark.parametrize(
    "target",
    [
        "/files/..",
        "/files/%2e%2e",
        "/files/%2E%2e/secret",
        "/files/..%2fsecret",
        "/files/..%5csecret",
        "/files/%252e%252e",
        "/files/a/../../secret",
    ],
)
async def test_dot_segments_never_reach_a_backend(
    backend: EchoBackend, gateway_factory: GatewayFactory, target: str
) -> None:
    gw = await gateway_factory(cfg(route("/files/{*name}", "/public/{*name}", [backend])))
    resp = await raw_request(gw.port, target)
    assert resp.status == 400
    assert resp.header("Content-Type") == "application/problem+json"
    assert resp.json()["type"] == "invalid_path"
    assert backend.requests == []


async def test_request_body_and_method_are_forwarded(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/items", "/items", [backend])))
    resp = await raw_request(
        gw.port,
        "/items",
        method="POST",
        body=b'{"name":"x"}',
        headers=[("Content-Type", "application/json")],
    )
    echo = resp.json()
    assert echo["method"] == "POST"
    assert echo["body"] == '{"name":"x"}'
    assert headers_of(echo)["content-length"] == ["12"]


async def test_chunked_request_body_is_forwarded_with_a_length(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/items", "/items", [backend])))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        b"PUT /items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    resp = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    echo = resp.json()
    assert echo["body"] == "hello world"
    hdrs = headers_of(echo)
    assert hdrs["content-length"] == ["11"]
    assert "transfer-encoding" not in hdrs


async def test_hop_by_hop_headers_are_stripped_both_ways(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/{*p}", "/{*p}", [backend])))
    resp = await raw_request(
        gw.port,
        "/x",
        headers=[
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Private", "drop me"),
            ("Connection", "X-Private"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Keep", "kept"),
        ],
    )
    hdrs = headers_of(resp.json())
    for name in ("keep-alive", "te", "x-private", "connection", "proxy-authorization"):
        assert name not in hdrs, name
    assert hdrs["x-keep"] == ["kept"]

    cookies = await raw_request(gw.port, "/cookies")
    # The backend lists X-Hop in its Connection header: it must not reach the client.
    assert cookies.header("X-Hop") is None
    assert cookies.header_all("Set-Cookie") == [
        "a=1; Path=/",
        "b=2; Path=/",
        "c=3; Path=/; HttpOnly",
    ]


async def test_forwarding_headers(backend: EchoBackend, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    resp = await raw_request(
        gw.port,
        "/x",
        host="api.example.test",
        headers=[
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
        ],
    )
    hdrs = headers_of(resp.json())
    assert hdrs["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    # The client is not a trusted proxy: its claims about proto and host are replaced.
    assert hdrs["x-forwarded-proto"] == ["http"]
    assert hdrs["x-forwarded-host"] == ["api.example.test"]
    assert hdrs["host"] == [f"127.0.0.1:{backend.port}"]


async def test_trusted_proxy_keeps_forwarded_proto_and_host(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), trusted_proxies=["127.0.0.0/8"]))
    resp = await raw_request(
        gw.port,
        "/x",
        headers=[("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "public.test")],
    )
    hdrs = headers_of(resp.json())
    assert hdrs["x-forwarded-proto"] == ["https"]
    assert hdrs["x-forwarded-host"] == ["public.test"]


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarded_and_x_real_ip_only_from_a_trusted_proxy(
    backend: EchoBackend, gateway_factory: GatewayFactory, trusted: bool
) -> None:
    proxies = {"trusted_proxies": ["127.0.0.0/8"]} if trusted else {}
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), **proxies))
    claims = [("Forwarded", "for=10.0.0.1;proto=https"), ("X-Real-IP", "10.0.0.1")]
    hdrs = headers_of((await raw_request(gw.port, "/x", headers=claims)).json())
    if trusted:
        assert (hdrs["forwarded"], hdrs["x-real-ip"]) == (
            ["for=10.0.0.1;proto=https"],
            ["10.0.0.1"],
        )
    else:  # a client's claim about where it is from never reaches the backend
        assert "forwarded" not in hdrs
        assert "x-real-ip" not in hdrs


async def test_preserve_host(backend: EchoBackend, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend], preserve_host=True)))
    resp = await raw_request(gw.port, "/x", host="api.example.test")
    assert headers_of(resp.json())["host"] == ["api.example.test"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("has space", False),
        ("x" * 200, False),
        ("", False),
    ],
)
async def test_request_id_is_kept_when_sane_and_returned(
    backend: EchoBackend, gateway_factory: GatewayFactory, sent: str, kept: bool
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    resp = await raw_request(gw.port, "/x", headers=[("X-Request-ID", sent)] if sent else [])
    upstream_id = headers_of(resp.json())["x-request-id"]
    assert len(upstream_id) == 1
    assert resp.header("X-Request-Id") == upstream_id[0]
    assert (upstream_id[0] == sent) is kept
    if not kept:
        assert len(upstream_id[0]) == 32


async def test_head_204_and_304_have_no_body(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/{*p}", "/{*p}", [backend])))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        # All three on one keep-alive connection: a stray body byte would corrupt the next.
        writer.write(b"HEAD /anything HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(read_response(reader, head=True), 5)
        assert head.status == 200
        assert head.header("Content-Length") == "42"
        for code in (204, 304):
            writer.write(f"GET /status/{code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            resp = await asyncio.wait_for(read_response(reader), 5)
            assert resp.status == code
            assert resp.body == b""
        writer.write(b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        last = await asyncio.wait_for(read_response(reader), 5)
        assert last.body == b"status 200"
    finally:
        writer.close()


async def test_response_is_streamed_before_the_backend_finishes(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/stream", "/stream", [backend])))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Transfer-Encoding: chunked" in head
        # The backend is still waiting on `release`, yet its first chunk is here.
        first = await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 5)
        assert first.endswith(b"first-chunk;\r\n")
        assert not backend.release.is_set()
        backend.release.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert b"second-chunk" in rest
    finally:
        writer.close()


async def test_upstream_connections_are_reused(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    for _ in range(30):
        assert (await raw_request(gw.port, "/x")).status == 200
    assert backend.accepted == 1


async def test_round_robin_over_backends(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b, c = [await backend_factory(name) for name in "abc"]
    gw = await gateway_factory(cfg(route("/x", "/x", [a, b, c])))
    seen = [(await raw_request(gw.port, "/x")).header("X-Backend") for _ in range(9)]
    assert sorted(seen) == sorted(["a", "b", "c"] * 3)
    assert seen[:3] == seen[3:6] == seen[6:]


async def test_no_route_is_a_problem_with_request_id(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(cfg())
    resp = await raw_request(gw.port, "/nope", headers=[("X-Request-ID", "req-1")])
    assert resp.status == 404
    assert resp.header("Content-Type") == "application/problem+json"
    body = resp.json()
    assert body == {
        "type": "route_not_found",
        "title": body["title"],
        "status": 404,
        "detail": body["detail"],
        "request_id": "req-1",
    }
    assert resp.header("X-Request-Id") == "req-1"


async def test_method_not_allowed_lists_allowed_methods(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend], methods=["GET", "PUT"])))
    resp = await raw_request(gw.port, "/x", method="DELETE")
    assert resp.status == 405
    assert resp.header("Allow") == "GET, PUT"
    assert resp.json()["type"] == "method_not_allowed"


async def test_unreachable_backend_is_502(gateway_factory: GatewayFactory) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    gw = await gateway_factory(cfg(route("/x", "/x", [dead])))
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 502
    body = resp.json()
    assert body["type"] == "upstream_error"
    assert "127.0.0.1" not in resp.body.decode()  # internal details stay in the log
    assert body["request_id"] == resp.header("X-Request-Id")


async def test_slow_backend_is_504(backend: EchoBackend, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(
        cfg(route("/slow/{ms}", "/slow/{ms}", [backend], timeouts={"read_ms": 100}))
    )
    resp = await raw_request(gw.port, "/slow/2000")
    assert resp.status == 504
    assert resp.json()["type"] == "upstream_timeout"
    # The global timeout still applies to other routes.
    assert gw.gateway.runtime.snapshot.config.timeouts.read_ms == 30000


async def test_access_log_line(backend: EchoBackend, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(cfg(route("/users/{id}", "/u/{id}", [backend])))
    await raw_request(
        gw.port,
        "/users/7?token=secret",
        headers=[("X-Request-ID", "log-1")],
        method="POST",
        body=b"abc",
    )
    lines = [json.loads(line) for line in gw.access_lines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "log-1"
    assert line["method"] == "POST"
    assert line["path"] == "/users/7"  # the query string may carry secrets: not logged
    assert line["route"] == "/users/{id}"
    assert line["backend"] == backend.url
    assert line["status"] == 200
    assert line["bytes_in"] == 3
    assert line["bytes_out"] > 0
    assert line["client"] == "127.0.0.1"
    assert line["duration_ms"] >= 0
    assert line["time"].endswith("Z")


async def test_idle_keepalive_connections_are_closed(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(cfg(), idle_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        # A client that starts its headers and never finishes them is cut off too.
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert await asyncio.wait_for(reader.read(), 3) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("target", ["/api/openapi.json", "/api/routes", "/api/config/status"])
async def test_management_paths_are_never_proxied(
    backend: EchoBackend, gateway_factory: GatewayFactory, target: str
) -> None:
    gw = await gateway_factory(cfg(route("/api/{*rest}", "/{*rest}", [backend])))
    assert (await raw_request(gw.port, "/api/users")).status == 200
    resp = await raw_request(gw.port, target)
    assert resp.header("X-Backend") is None  # answered by the management API itself
    assert len(backend.requests) == 1
