"""Request bodies stream upstream as they arrive: bounded memory, backpressure, replays
only from the replay buffer, 413 mid-stream, early answers, clients that leave."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from kairos_gateway import PluginRegistry
from kairos_gateway.body import RequestBody
from kairos_gateway.chain import Policy, Request, UpstreamRequest
from kairos_gateway.plugins import Plugin
from pydantic import BaseModel

from tests.conftest import GatewayFactory
from tests.support import LOOPBACK, EchoBackend, eventually, raw_request, read_response, route

KIB = 1024
MIB = 1024 * 1024


@dataclass
class SinkBackend:
    """A raw HTTP/1.1 backend that reads request bodies under the test's control and
    answers with what it got: length, SHA-256 and framing.

    ``mode``: "answer" (read the whole body, then answer), "reset_once" (the first
    connection closes right after the request head, later ones answer), "early"
    (answer 401 at once without reading the body).
    """

    mode: str = "answer"
    port: int = 0
    #: Cleared: the backend stops reading the body (a slow backend).
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    heads: list[bytes] = field(default_factory=list)
    body_bytes: int = 0
    connections: int = 0
    closed_early: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> SinkBackend:
        self.reading.set()
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                if self.mode == "reset_once" and self.connections == 1:
                    writer.transport.abort()
                    return
                if self.mode == "early":
                    writer.write(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    await writer.drain()
                    writer.close()
                    return
                digest = hashlib.sha256()
                length, framing = await self._read_body(head, reader, digest)
                answer = json.dumps(
                    {"length": length, "sha256": digest.hexdigest(), "framing": framing}
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_early += 1
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        await self.reading.wait()
        data = await reader.read(n)
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        self.body_bytes += len(data)
        return data

    async def _read_body(
        self, head: bytes, reader: asyncio.StreamReader, digest: Any
    ) -> tuple[int, str]:
        fields = {
            line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")[1:]
            if b":" in line
        }
        if fields.get(b"transfer-encoding") == b"chunked":
            total = 0
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return total, "chunked"
                left = size
                while left:
                    data = await self._read(reader, min(left, 64 * KIB))
                    digest.update(data)
                    left -= len(data)
                total += size
                await reader.readexactly(2)
        left = int(fields.get(b"content-length", b"0"))
        total = left
        while left:
            data = await self._read(reader, min(left, 64 * KIB))
            digest.update(data)
            left -= len(data)
        return total, "length"


@pytest.fixture
async def sink_factory() -> Any:
    started: list[SinkBackend] = []

    async def make(mode: str = "answer") -> SinkBackend:
        sink = await SinkBackend(mode=mode).start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.reading.set()
        await sink.stop()


def cfg(*routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **extra}


def body_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


async def post(
    port: int, body: bytes, *, chunked: bool = False, path: str = "/up"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and send a POST head; the caller writes the body."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n\r\n"
        % (path.encode(), LOOPBACK.encode(), port, framing)
    )
    return reader, writer


def paused_bodies() -> list[RequestBody]:
    """Streamed bodies whose client is waiting for the backend to catch up."""
    return [o for o in gc.get_objects() if isinstance(o, RequestBody) and o._writable is not None]


async def test_a_large_body_reaches_the_backend_before_the_client_has_sent_it_all(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    gw = await gateway_factory(cfg(route("/up", "/in", [sink], methods=["POST"])))
    body = body_of(4 * MIB)
    reader, writer = await post(gw.port, body)
    writer.write(body[: 2 * MIB])
    # Half the body is out; a buffering gateway would send the backend nothing yet.
    await eventually(lambda: sink.body_bytes >= 1 * MIB)
    writer.write(body[2 * MIB :])
    resp = await asyncio.wait_for(read_response(reader), 10)
    writer.close()
    assert resp.status == 200
    got = resp.json()
    assert got == {
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "framing": "length",
    }
    assert b"content-length: %d" % len(body) in sink.heads[0].lower()


async def test_a_large_chunked_body_goes_upstream_chunked(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    gw = await gateway_factory(cfg(route("/up", "/in", [sink], methods=["POST"])))
    body = body_of(1 * MIB + 17)
    reader, writer = await post(gw.port, body, chunked=True)
    for i in range(0, len(body), 100 * KIB):
        piece = body[i : i + 100 * KIB]
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(b"0\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 10)
    writer.close()
    got = resp.json()
    assert got["framing"] == "chunked"
    assert got["length"] == len(body)
    assert got["sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_small_chunked_body_goes_upstream_with_a_length(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    gw = await gateway_factory(cfg(route("/up", "/in", [sink], methods=["POST"])))
    reader, writer = await post(gw.port, b"", chunked=True)
    writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    resp = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert resp.json()["framing"] == "length"
    assert resp.json()["length"] == 11


async def test_a_slow_backend_slows_the_client_not_the_gateways_memory(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    sink.reading.clear()  # reads the request head, then nothing
    gw = await gateway_factory(
        cfg(route("/up", "/in", [sink], methods=["POST"], max_body_size=64 * MIB))
    )
    body = body_of(48 * MIB)
    reader, writer = await post(gw.port, body)
    writer.write(body)  # buffered in this process; the kernel takes what it can

    # The gateway stops reading the client once its read-ahead buffer is full...
    await eventually(paused_bodies)
    [stream] = paused_bodies()
    assert stream._unread <= 64 * KIB + 64 * KIB
    # ...so most of the body is still on the client's side (kernel buffers hold a few MB).
    assert stream.received < 24 * MIB
    assert writer.transport.get_write_buffer_size() > 20 * MIB
    sink.reading.set()
    resp = await asyncio.wait_for(read_response(reader), 30)
    writer.close()
    assert resp.json()["length"] == len(body)
    assert resp.json()["sha256"] == hashlib.sha256(body).hexdigest()


async def test_a_failed_try_is_replayed_when_the_body_fits_the_replay_buffer(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory("reset_once")
    retry = {"max_retries": 1, "initial_backoff_ms": 1, "retry_non_idempotent": True}
    gw = await gateway_factory(
        cfg(
            route("/up", "/in", [sink], methods=["POST"], retry_config=retry),
            request_buffer_size=1024,
        )
    )
    body = body_of(40 * KIB)  # streamed (over 1 KiB), replayable (under 64 KiB)
    resp = await raw_request(gw.port, "/up", method="POST", body=body)
    assert resp.status == 200
    assert resp.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert len(sink.heads) == 2


async def test_a_body_past_the_replay_buffer_makes_the_first_failure_final(
    sink_factory: Any, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sink = await sink_factory("reset_once")
    retry = {"max_retries": 2, "initial_backoff_ms": 1, "retry_non_idempotent": True}
    gw = await gateway_factory(
        cfg(
            route(
                "/up",
                "/in",
                [sink],
                methods=["POST"],
                retry_config=retry,
                replay_buffer_size=16 * KIB,
            ),
            request_buffer_size=1024,
        )
    )
    body = body_of(1 * MIB)
    with caplog.at_level(logging.WARNING, logger="kairos.gateway"):
        resp = await raw_request(gw.port, "/up", method="POST", body=body)
    assert resp.status == 502
    assert len(sink.heads) == 1
    assert any("not retried" in r.getMessage() for r in caplog.records)


async def test_a_chunked_body_over_the_limit_is_cut_off_with_413_mid_stream(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    gw = await gateway_factory(
        cfg(route("/up", "/in", [sink], methods=["POST"], max_body_size=256 * KIB))
    )
    reader, writer = await post(gw.port, b"", chunked=True)
    piece = body_of(64 * KIB)
    for _ in range(6):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    resp = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert resp.status == 413
    assert resp.json()["type"] == "payload_too_large"
    # The upstream request was abandoned, its connection closed.
    await eventually(lambda: sink.closed_early == 1)


async def test_a_client_leaving_mid_upload_aborts_the_upstream_request(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    gw = await gateway_factory(cfg(route("/up", "/in", [sink], methods=["POST"])))
    body = body_of(2 * MIB)
    _, writer = await post(gw.port, body)
    writer.write(body[: 1 * MIB])
    await eventually(lambda: sink.body_bytes > 0)
    writer.transport.abort()
    await eventually(lambda: sink.closed_early == 1)
    await eventually(lambda: any('"status":499' in line for line in gw.access_lines()))


async def test_an_early_answer_from_the_backend_reaches_the_client(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory("early")
    gw = await gateway_factory(cfg(route("/up", "/in", [sink], methods=["POST"])))
    body = body_of(1 * MIB)
    reader, writer = await post(gw.port, body)
    writer.write(body[: 256 * KIB])
    resp = await asyncio.wait_for(read_response(reader), 5)
    assert resp.status == 401
    writer.close()


async def test_waiting_for_a_slow_client_is_not_an_upstream_timeout(
    sink_factory: Any, gateway_factory: GatewayFactory
) -> None:
    sink = await sink_factory()
    gw = await gateway_factory(
        cfg(route("/up", "/in", [sink], methods=["POST"], timeouts={"read_ms": 200}))
    )
    body = body_of(256 * KIB)
    reader, writer = await post(gw.port, body)
    writer.write(body[: 128 * KIB])
    await eventually(lambda: sink.body_bytes >= 64 * KIB)
    # The client pauses for longer than the route's read timeout: time passing is the
    # point here, there is no event to wait for.
    await asyncio.sleep(0.5)
    writer.write(body[128 * KIB :])
    resp = await asyncio.wait_for(read_response(reader), 5)
    writer.close()
    assert resp.status == 200
    assert resp.json()["length"] == len(body)


class _NoConfig(BaseModel):
    pass


class _WholeBody(Policy):
    """Needs the body in memory: records what ``before_upstream`` saw."""

    needs_body = True

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        self.seen.append(upstream.body)
        if isinstance(upstream.body, bytes):
            upstream.body = upstream.body.upper()


async def test_a_policy_that_needs_the_body_gets_it_whole(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    seen: list[object] = []
    registry = PluginRegistry(
        [Plugin(name="whole-body", config=_NoConfig, policy=lambda _cfg: _WholeBody(seen))]
    )
    gw = await gateway_factory(
        cfg(route("/up", "/in", [backend], methods=["POST"], plugins=[{"name": "whole-body"}])),
        plugins=registry,
    )
    body = b"abc" * (200 * KIB)
    resp = await raw_request(gw.port, "/up", method="POST", body=body)
    assert resp.status == 200
    assert seen == [body]
    assert resp.json()["body"] == body.upper().decode()
