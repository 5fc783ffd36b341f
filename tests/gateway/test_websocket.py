"""WebSocket proxying through a running gateway: real WebSocket servers (aiohttp) and
clients (aiohttp, the `websockets` package, and a browser-style handshake on a raw
socket)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import trustme
import websockets
from aiohttp import web
from kairos_gateway.upstream.tunnel import accept_key
from kairos_gateway.websocket import wants_upgrade
from tornado.httputil import HTTPHeaders
from tornado.testing import bind_unused_port

from tests.conftest import GatewayFactory, RunningGateway
from tests.gateway.test_ops import sample
from tests.gateway.test_tls_listener import client_context, write_cert
from tests.support import (
    LOOPBACK,
    EchoBackend,
    api_call,
    eventually,
    raw_request,
    route,
    unused_port,
)

SECRET = "k" * 48


@dataclass
class WsBackend:
    """An aiohttp application: ``/echo`` echoes every message (subprotocol ``chat``,
    permessage-deflate on offer), ``/bye`` says bye and closes with 4000, ``/refuse``
    answers 403. Records each upgrade request's headers and how sessions ended."""

    name: str = "ws"
    port: int = 0
    #: Served over TLS with this context.
    ssl_context: ssl.SSLContext | None = None
    #: Not 0: /echo answers upgrades with this status instead.
    fail_status: int = 0
    requests: list[web.Request] = field(default_factory=list)
    #: Close codes of finished /echo sessions (None: the connection just dropped).
    closed: list[int | None] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.fail_status:
            return web.Response(status=self.fail_status, text="unavailable")
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        await ws.send_str(f"hello from {self.name}")
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        self.closed.append(ws.close_code)
        return ws

    async def _bye(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("bye")
        await ws.close(code=4000, message=b"done")
        return ws

    async def _refuse(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        return web.Response(status=403, text="not you", headers={"X-Why": "policy"})

    async def start(self) -> WsBackend:
        app = web.Application()
        app.router.add_get("/echo", self._echo)
        app.router.add_get("/bye", self._bye)
        app.router.add_get("/refuse", self._refuse)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        sock, self.port = bind_unused_port()
        await web.SockSite(self._runner, sock, ssl_context=self.ssl_context).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class RawWsBackend:
    """A backend on a bare socket: answers the upgrade (a wrong accept key with
    ``bad_accept``), then reads nothing, so what the gateway may buffer shows."""

    def __init__(
        self, *, bad_accept: bool = False, answer: bool = True, flood: bool = False
    ) -> None:
        self.bad_accept = bad_accept
        #: After the upgrade, send binary frames until the connection takes no more.
        self.flood = flood
        self.flooded = 0
        self.stalled = asyncio.Event()
        #: False: never answer the upgrade request (until released).
        self.answer = answer
        self.port = 0
        self.release = asyncio.Event()
        self.requested = asyncio.Event()
        self.upgraded = asyncio.Event()
        #: Bytes read after the request head (the gateway closing shows as b"").
        self.after: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requested.set()
        if not self.answer:
            self.after = await reader.read(1)
            return
        key = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "sec-websocket-key":
                key = value.strip()
        accept = "d3Jvbmc=" if self.bad_accept else accept_key(key)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
        )
        self.upgraded.set()
        if self.flood:
            frame = b"\x82\x7f" + (65536).to_bytes(8, "big") + bytes(65536)
            while self.flooded < 512 * 1024 * 1024:
                writer.write(frame)
                try:
                    await asyncio.wait_for(writer.drain(), 0.5)
                except TimeoutError:
                    self.stalled.set()
                    break
                self.flooded += len(frame)
        await self.release.wait()

    async def start(self) -> RawWsBackend:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    await self._serve(reader, writer)
            finally:
                writer.transport.abort()

        self._server = await asyncio.start_server(on_connect, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.close()
            await asyncio.gather(*self._tasks)
            await self._server.wait_closed()


@pytest.fixture
async def ws_backend() -> AsyncIterator[WsBackend]:
    backend = await WsBackend().start()
    yield backend
    await backend.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def ws_route(external: str, internal: str, backends: list[Any], **extra: Any) -> dict[str, Any]:
    extra.setdefault("websocket", True)
    return route(external, internal, backends, methods=["GET"], **extra)


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **top}


def ws_url(gw: RunningGateway, path: str) -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


async def metrics_text(gw: RunningGateway) -> str:
    return (await raw_request(gw.port, "/metrics")).body.decode()


def tunnels_open(gw: RunningGateway) -> int:
    return len(gw.gateway.websockets)


def test_accept_key_of_rfc_6455() -> None:
    # RFC 6455 section 1.3's example.
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"Connection": "Upgrade", "Upgrade": "websocket"}, True),
        ("GET", {"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}, True),  # Firefox
        ("GET", {"Connection": "upgrade", "Upgrade": "h2c, websocket"}, True),
        ("GET", {"Upgrade": "websocket"}, False),  # Connection does not name it
        ("GET", {"Connection": "Upgrade", "Upgrade": "h2c"}, False),
        ("POST", {"Connection": "Upgrade", "Upgrade": "websocket"}, False),
    ],
)
def test_what_counts_as_an_upgrade(method: str, headers: dict[str, str], expected: bool) -> None:
    assert wants_upgrade(method, HTTPHeaders(headers)) is expected


# -- the relay -------------------------------------------------------------------------


async def test_messages_relayed_both_ways(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(cfg(ws_route("/chat/{room}", "/echo", [ws_backend])))
    big = os.urandom(3 * 1024 * 1024)
    async with session.ws_connect(ws_url(gw, "/chat/lobby?user=ann"), protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        assert await ws.receive_str(timeout=5) == "hello from ws"
        await ws.send_str("ping")
        assert await ws.receive_str(timeout=5) == "ping"
        await ws.send_bytes(big)  # larger than any buffer on the way
        assert await ws.receive_bytes(timeout=10) == big
        for i in range(100):
            await ws.send_str(f"m{i}")
        assert [await ws.receive_str(timeout=5) for _ in range(100)] == [
            f"m{i}" for i in range(100)
        ]
    seen = ws_backend.requests[0]
    assert seen.path_qs == "/echo?user=ann"
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert seen.headers["X-Request-Id"]
    await eventually(lambda: ws_backend.closed == [1000])
    await eventually(lambda: tunnels_open(gw) == 0)
    line = gw.access_lines()[-1]
    record = json.loads(line)
    assert record["status"] == 101
    assert record["route"] == "/chat/{room}"
    assert record["bytes_in"] > len(big)
    assert record["bytes_out"] > len(big)
    assert record["backend"] == f"http://127.0.0.1:{ws_backend.port}"


async def test_browser_handshake_and_the_websockets_client(
    ws_backend: WsBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))
    key = base64.b64encode(os.urandom(16)).decode()
    # What a browser sends for `new WebSocket("ws://host/ws", ["chat"])`.
    reader, writer = await asyncio.open_connection(LOOPBACK, gw.port)
    writer.write(
        (
            "GET /ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{gw.port}\r\n"
            "Connection: Upgrade\r\n"
            "Pragma: no-cache\r\n"
            "Cache-Control: no-cache\r\n"
            "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36\r\n"
            "Upgrade: websocket\r\n"
            "Origin: http://127.0.0.1\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Accept-Encoding: gzip, deflate, br\r\n"
            "Accept-Language: en-US,en;q=0.9\r\n"
            "Cookie: session=abc\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            "Sec-WebSocket-Protocol: chat\r\n"
            "\r\n"
        ).encode()
    )
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    assert headers["upgrade"] == "websocket"
    assert headers["connection"] == "Upgrade"
    assert headers["sec-websocket-accept"] == accept_key(key)
    assert headers["sec-websocket-protocol"] == "chat"
    assert headers["x-request-id"]
    assert "content-length" not in headers
    writer.close()
    await writer.wait_closed()
    seen = ws_backend.requests[0].headers
    assert seen["Cookie"] == "session=abc"
    assert seen["Origin"] == "http://127.0.0.1"
    assert seen["Sec-WebSocket-Key"] == key

    # A real client library, with permessage-deflate negotiated end to end.
    async with websockets.connect(ws_url(gw, "/ws"), subprotocols=["chat"]) as client:  # type: ignore[list-item]
        assert client.subprotocol == "chat"
        assert await asyncio.wait_for(client.recv(), 5) == "hello from ws"
        await client.send("compressed " * 1000)
        assert await asyncio.wait_for(client.recv(), 5) == "compressed " * 1000
        extensions = client.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in extensions
    await eventually(lambda: tunnels_open(gw) == 0)


def masked_text(text: str) -> bytes:
    """A client's text frame (short payload, masked with a zero key)."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


async def read_text_frame(reader: asyncio.StreamReader) -> str:
    """One unmasked server text frame with a short payload."""
    first, length = await asyncio.wait_for(reader.readexactly(2), 5)
    assert first == 0x81
    assert length < 126
    return (await reader.readexactly(length)).decode()


async def test_a_frame_sent_with_the_handshake_is_relayed(
    ws_backend: WsBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))
    reader, writer = await asyncio.open_connection(LOOPBACK, gw.port)
    # The first message in the same packet as the handshake, before the 101 arrived.
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ).encode()
        + masked_text("early bird")
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    assert await read_text_frame(reader) == "hello from ws"
    assert await read_text_frame(reader) == "early bird"
    writer.transport.abort()
    await eventually(lambda: tunnels_open(gw) == 0)


async def test_protocol_websocket_spelling(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        cfg(route("/ws", "/echo", [ws_backend], methods=["GET"], protocol="websocket"))
    )
    async with session.ws_connect(ws_url(gw, "/ws")) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"


async def test_route_without_websockets_proxies_plain_http(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    resp = await raw_request(
        gw.port,
        "/x",
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert resp.status == 200
    sent = {k.lower() for k, _ in resp.json()["headers"]}
    assert "upgrade" not in sent  # hop-by-hop: dropped
    assert "sec-websocket-key" in sent


async def test_a_websocket_route_added_through_the_api_is_live_and_saved(
    ws_backend: WsBackend, file_gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await file_gateway_factory(cfg())
    created = await api_call(
        gw.port,
        "POST",
        "/api/routes",
        ws_route("/chat", "/echo", [ws_backend], websocket={"idle_timeout_s": 60}),
    )
    assert created.status == 201, created.body
    async with session.ws_connect(ws_url(gw, "/chat")) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    saved = json.loads(source.read_text())["routers"][0]
    assert saved["websocket"] == {"idle_timeout_s": 60.0}


async def test_plain_get_on_a_websocket_route_is_proxied(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(ws_route("/x", "/x", [backend])))
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 200
    assert resp.json()["uri"] == "/x"


# -- refusals before the upgrade -------------------------------------------------------


async def test_jwt_checked_before_the_upgrade(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        cfg(ws_route("/ws", "/echo", [ws_backend], auth_required=True), jwt_secret=SECRET)
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(gw, "/ws"))
    assert refused.value.status == 401
    resp = await raw_request(
        gw.port,
        "/ws",
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert resp.status == 401
    assert resp.header("Content-Type") == "application/problem+json"
    assert resp.header("WWW-Authenticate")
    assert resp.json()["status"] == 401
    assert ws_backend.requests == []
    now = int(time.time())
    token = jwt.encode({"sub": "ann", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    async with session.ws_connect(
        ws_url(gw, "/ws"), headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
    text = await metrics_text(gw)
    assert sample(text, "kairos_websocket_upgrades_total", route="/ws", status="401") == 2
    assert sample(text, "kairos_websocket_upgrades_total", route="/ws", status="101") == 1


async def test_origin_outside_the_cors_policy_is_refused(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        cfg(ws_route("/ws", "/echo", [ws_backend], cors={"allowed_origins": ["https://app.test"]}))
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(ws_url(gw, "/ws"), origin="https://evil.test")
    assert refused.value.status == 403
    assert ws_backend.requests == []
    async with session.ws_connect(ws_url(gw, "/ws"), origin="https://app.test") as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
    async with session.ws_connect(ws_url(gw, "/ws")) as ws:  # no Origin: not a browser
        assert await ws.receive_str(timeout=5) == "hello from ws"


async def test_rate_limit_counts_upgrades(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    limit = {"algorithm": "fixed_window", "requests_per_window": 1, "window_seconds": 60}
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend], rate_limit=limit)))
    async with session.ws_connect(ws_url(gw, "/ws")) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(gw, "/ws"))
        assert refused.value.status == 429


async def test_backend_refusal_reaches_the_client(
    ws_backend: WsBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/refuse", [ws_backend])))
    resp = await raw_request(
        gw.port,
        "/ws",
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert resp.status == 403
    assert resp.body == b"not you"
    assert resp.header("X-Why") == "policy"


async def test_upgrade_without_a_key_is_a_bad_request(
    ws_backend: WsBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))
    resp = await raw_request(
        gw.port, "/ws", headers=[("Connection", "Upgrade"), ("Upgrade", "websocket")]
    )
    assert resp.status == 400
    assert resp.header("Content-Type") == "application/problem+json"
    assert ws_backend.requests == []


# -- upstream failures before 101 --------------------------------------------------------


async def test_connect_failure_is_retried_on_another_backend(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    gw = await gateway_factory(
        cfg(
            ws_route(
                "/ws",
                "/echo",
                [dead, ws_backend],
                retry_config={"max_retries": 2, "initial_backoff_ms": 0, "max_backoff_ms": 0},
            )
        )
    )
    for _ in range(4):  # round robin: every other upgrade meets the dead backend first
        async with session.ws_connect(ws_url(gw, "/ws")) as ws:
            assert await ws.receive_str(timeout=5) == "hello from ws"
    text = await metrics_text(gw)
    assert (sample(text, "kairos_retries_total", route="/ws", reason="connect") or 0) >= 1


async def test_a_retryable_status_is_retried_on_another_backend(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    failing = await WsBackend(name="failing", fail_status=503).start()
    try:
        gw = await gateway_factory(
            cfg(
                ws_route(
                    "/ws",
                    "/echo",
                    [failing, ws_backend],
                    retry_config={"max_retries": 1, "initial_backoff_ms": 0, "max_backoff_ms": 0},
                )
            )
        )
        for _ in range(2):
            async with session.ws_connect(ws_url(gw, "/ws")) as ws:
                assert await ws.receive_str(timeout=5) == "hello from ws"
        assert len(failing.requests) == 1
        text = await metrics_text(gw)
        assert sample(text, "kairos_retries_total", route="/ws", reason="status_503") == 1
    finally:
        await failing.stop()


async def test_tls_backend(
    tmp_path: Path, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secure = await WsBackend(name="tls", ssl_context=context).start()
    try:
        backend = {"host": "https://127.0.0.1", "port": secure.port, "tls_ca_file": str(ca_file)}
        gw = await gateway_factory(
            cfg(
                {
                    "external_path": "/ws",
                    "internal_path": "/echo",
                    "methods": ["GET"],
                    "backends": [backend],
                    "websocket": True,
                }
            )
        )
        async with session.ws_connect(ws_url(gw, "/ws")) as ws:
            assert await ws.receive_str(timeout=5) == "hello from tls"
            await ws.send_str("over TLS")
            assert await ws.receive_str(timeout=5) == "over TLS"
    finally:
        await secure.stop()


async def test_wss_through_the_gateways_tls_listener(
    ws_backend: WsBackend, tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    ca = trustme.CA()
    cert = write_cert(ca, tmp_path, "server", "127.0.0.1")
    gw = await gateway_factory(
        cfg(ws_route("/ws", "/echo", [ws_backend]), listen={"tls": cert.block()})
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"wss://127.0.0.1:{gw.port}/ws", ssl=client_context(ca)) as ws,
    ):
        assert await ws.receive_str(timeout=5) == "hello from ws"
        await ws.send_bytes(b"secret" * 10000)
        assert await ws.receive_bytes(timeout=5) == b"secret" * 10000
    assert ws_backend.requests[0].headers["X-Forwarded-Proto"] == "https"
    await eventually(lambda: tunnels_open(gw) == 0)


async def test_unreachable_backend_is_a_502_problem(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [f"http://127.0.0.1:{unused_port()}"])))
    resp = await raw_request(
        gw.port,
        "/ws",
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert resp.status == 502
    assert resp.header("Content-Type") == "application/problem+json"


async def test_a_101_with_a_wrong_accept_key_is_a_502(gateway_factory: GatewayFactory) -> None:
    bad = await RawWsBackend(bad_accept=True).start()
    try:
        gw = await gateway_factory(cfg(ws_route("/ws", "/ws", [bad])))
        resp = await raw_request(
            gw.port,
            "/ws",
            headers=[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
        assert resp.status == 502
    finally:
        await bad.stop()


async def test_client_leaving_before_the_upgrade_releases_everything(
    gateway_factory: GatewayFactory,
) -> None:
    silent = await RawWsBackend(answer=False).start()
    try:
        gw = await gateway_factory(cfg(ws_route("/ws", "/ws", [silent])))
        _, writer = await asyncio.open_connection(LOOPBACK, gw.port)
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ).encode()
        )
        await asyncio.wait_for(silent.requested.wait(), 5)
        writer.close()
        await writer.wait_closed()
        await eventually(lambda: silent.after == b"")  # the backend connection is closed
        await eventually(lambda: gw.gateway.inflight == 0)
        assert json.loads(gw.access_lines()[-1])["status"] == 499
    finally:
        await silent.stop()


# -- closing -----------------------------------------------------------------------------


async def test_backend_close_reaches_the_client(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/bye", [ws_backend])))
    async with session.ws_connect(ws_url(gw, "/ws")) as ws:
        assert await ws.receive_str(timeout=5) == "bye"
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4000
    await eventually(lambda: tunnels_open(gw) == 0)
    text = await metrics_text(gw)
    assert sample(text, "kairos_websocket_connections", route="/ws") == 0
    assert sample(text, "kairos_websocket_duration_seconds_count", route="/ws") == 1
    assert (sample(text, "kairos_websocket_bytes_total", route="/ws", direction="down") or 0) > 0


async def test_client_close_reaches_the_backend(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))
    ws = await session.ws_connect(ws_url(gw, "/ws"))
    assert await ws.receive_str(timeout=5) == "hello from ws"
    assert sample(await metrics_text(gw), "kairos_websocket_connections", route="/ws") == 1
    await ws.close(code=4001)
    await eventually(lambda: ws_backend.closed == [4001])
    await eventually(lambda: tunnels_open(gw) == 0)
    assert gw.gateway.inflight == 0


async def test_idle_timeout_closes_both_sides(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        cfg(ws_route("/ws", "/echo", [ws_backend], websocket={"idle_timeout_s": 0.3}))
    )
    async with session.ws_connect(ws_url(gw, "/ws"), autoping=False) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
        msg = await ws.receive(timeout=5)  # nothing moves: the gateway closes
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
    await eventually(lambda: len(ws_backend.closed) == 1)
    await eventually(lambda: tunnels_open(gw) == 0)
    text = await metrics_text(gw)
    assert sample(text, "kairos_websocket_closed_total", route="/ws", by="idle") == 1


async def test_traffic_keeps_a_connection_from_idling_but_not_past_its_lifetime(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        cfg(
            ws_route(
                "/ws",
                "/echo",
                [ws_backend],
                websocket={"idle_timeout_s": 0.3, "max_lifetime_s": 1.0},
            )
        )
    )
    started = time.monotonic()
    async with session.ws_connect(ws_url(gw, "/ws")) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while not ws.closed:
                await ws.send_str("tick")
                msg = await ws.receive(timeout=5)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
    assert time.monotonic() - started >= 0.9  # well past the idle timeout
    await eventually(lambda: tunnels_open(gw) == 0)
    text = await metrics_text(gw)
    assert sample(text, "kairos_websocket_closed_total", route="/ws", by="lifetime") == 1


async def test_backpressure_bounds_what_the_gateway_buffers(
    gateway_factory: GatewayFactory,
) -> None:
    stalled = await RawWsBackend().start()
    try:
        gw = await gateway_factory(
            cfg(ws_route("/ws", "/ws", [stalled], websocket={"idle_timeout_s": 1}))
        )
        reader, writer = await asyncio.open_connection(LOOPBACK, gw.port)
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        # Masked binary frames of 64 KiB until the client cannot write any more.
        payload = bytes(65536)
        frame = b"\x82\xff" + (65536).to_bytes(8, "big") + b"\x00\x00\x00\x00" + payload
        sent = 0
        while sent < 512 * 1024 * 1024:
            writer.write(frame)
            try:
                await asyncio.wait_for(writer.drain(), 0.5)
            except TimeoutError:
                break
            sent += len(frame)
        else:
            pytest.fail("the gateway read 512 MiB from a backend that reads nothing")
        (tunnel,) = gw.gateway.websockets._open
        # What the gateway took is held in socket buffers and one chunk, not in memory.
        assert tunnel.bytes_up < 32 * 1024 * 1024
        # Neither side moves (the client is gone, the backend reads nothing): the idle
        # timeout ends the tunnel.
        writer.transport.abort()
        await eventually(lambda: tunnels_open(gw) == 0)
        assert tunnel.closed_by == "idle"
    finally:
        await stalled.stop()


async def test_backpressure_towards_a_client_that_reads_nothing(
    gateway_factory: GatewayFactory,
) -> None:
    flooding = await RawWsBackend(flood=True).start()
    try:
        gw = await gateway_factory(cfg(ws_route("/ws", "/ws", [flooding])))
        reader, writer = await asyncio.open_connection(LOOPBACK, gw.port)
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        # The client reads nothing more: the backend is slowed down to what the sockets
        # hold, instead of the gateway buffering its stream.
        await asyncio.wait_for(flooding.stalled.wait(), 30)
        (tunnel,) = gw.gateway.websockets._open
        assert tunnel.bytes_down < 32 * 1024 * 1024
        assert flooding.flooded < 32 * 1024 * 1024
        writer.transport.abort()  # the client goes: the gateway notices on its next write
        await eventually(lambda: tunnels_open(gw) == 0)
        assert tunnel.closed_by == "client"
    finally:
        await flooding.stop()


async def test_drain_gives_open_websockets_the_timeout_then_closes_them(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))
    async with session.ws_connect(ws_url(gw, "/ws")) as ws:
        assert await ws.receive_str(timeout=5) == "hello from ws"
        started = time.monotonic()
        stopping = asyncio.create_task(gw.gateway.stop(drain_timeout_s=0.5))
        await ws.send_str("still here")  # served during the drain
        assert await ws.receive_str(timeout=5) == "still here"
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE)
        assert time.monotonic() - started >= 0.45
        await stopping
    assert tunnels_open(gw) == 0
    assert gw.gateway.inflight == 0
    text = gw.gateway.runtime.metrics.render().decode()
    assert sample(text, "kairos_websocket_closed_total", route="/ws", by="shutdown") == 1


async def test_a_closed_websocket_leaves_no_reference_cycle(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            async with session.ws_connect(ws_url(gw, "/ws")) as ws:
                assert await ws.receive_str(timeout=5) == "hello from ws"
        await eventually(lambda: tunnels_open(gw) == 0)
        gc.collect()
        ours = {
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith("kairos_gateway")
        }
        # With the gateway's high GC thresholds, garbage in cycles lingers: none of
        # the tunnel's objects may need the cyclic collector.
        assert not ours
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def test_many_concurrent_connections(
    ws_backend: WsBackend, gateway_factory: GatewayFactory, session: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(cfg(ws_route("/ws", "/echo", [ws_backend])))

    async def one(i: int) -> None:
        async with session.ws_connect(ws_url(gw, "/ws")) as ws:
            assert await ws.receive_str(timeout=10) == "hello from ws"
            for j in range(5):
                await ws.send_str(f"{i}-{j}")
                assert await ws.receive_str(timeout=10) == f"{i}-{j}"

    await asyncio.gather(*(one(i) for i in range(50)))
    await eventually(lambda: tunnels_open(gw) == 0)
    text = await metrics_text(gw)
    assert sample(text, "kairos_websocket_upgrades_total", route="/ws", status="101") == 50
