"""Every error class from a real server: auth, unreachable, timeouts, retries, garbage."""

from __future__ import annotations

import asyncio
import io
import socket
import time

import pytest
from kairos_client import (
    ApiError,
    BadRequest,
    Forbidden,
    GatewayTimeout,
    GatewayUnavailable,
    InvalidResponse,
    KairosClient,
    KairosClientError,
    ServerError,
    Unauthorized,
)
from kairos_core import load_config
from kairos_gateway import AccessLog, Gateway, GatewaySettings

from tests.client.support import CountingTransport, client_for, http_answer, raw_server
from tests.conftest import GatewayFactory
from tests.support import non_loopback_address, unused_port

TOKEN = "admin-token-" + "z" * 24
ALIVE = http_answer("200 OK", b'{"status":"alive"}')
ROUTE = {"external_path": "/a", "internal_path": "/a", "methods": ["GET"], "backends": []}


async def test_token_missing_or_wrong_is_unauthorized(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []}, admin_token=TOKEN)
    for token in ("", "wrong-token"):
        async with client_for(gw, token=token) as client:
            with pytest.raises(Unauthorized) as caught:
                await client.list_routes()
            assert caught.value.status == 401
            assert caught.value.problem.type == "unauthorized"
            assert (await client.health()).status == "healthy"  # always open
    async with client_for(gw, token=TOKEN) as client:
        assert (await client.list_routes()).value.routes == []


async def test_no_token_and_not_loopback_is_forbidden() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    # Bound to every address: this machine's own non-loopback address is not loopback.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    gateway = Gateway(
        load_config({"version": 1, "routers": []}),
        GatewaySettings(),
        access_log=AccessLog(io.BytesIO(), "json"),
    )
    await gateway.start([sock])
    try:
        async with KairosClient(f"http://{address}:{port}", timeout=5) as client:
            with pytest.raises(Forbidden) as caught:
                await client.config_status()
            assert caught.value.status == 403
            assert "loopback" in caught.value.detail
    finally:
        await gateway.stop(drain_timeout_s=1)


async def test_closed_port_is_gateway_unavailable() -> None:
    async with KairosClient(f"http://127.0.0.1:{unused_port()}", retries=1) as client:
        with pytest.raises(GatewayUnavailable) as caught:
            await client.health()
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, KairosClientError)
    assert not isinstance(error, TimeoutError)
    assert "cannot connect" in str(error)
    assert error.__cause__ is not None


async def test_a_server_that_never_answers_times_out() -> None:
    async with (
        raw_server(hang=True) as server,
        KairosClient(server.url, timeout=0.3, retries=2) as client,
    ):
        started = time.monotonic()
        with pytest.raises(GatewayTimeout) as caught:
            await client.live()
        elapsed = time.monotonic() - started
        with pytest.raises(TimeoutError):
            await client.create_route(ROUTE)
    assert isinstance(caught.value, GatewayUnavailable)
    assert isinstance(caught.value, ConnectionError)
    assert "0.3s" in str(caught.value)
    assert elapsed < 2  # one attempt: a timeout is not retried
    assert server.connections == 2


# aiohttp itself resends an idempotent request once when the connection it used closes
# without an answer (RFC 9112 9.3.1), so a dropped GET costs up to two connections per
# attempt; the client's own attempts are counted at the transport seam.


async def test_reads_retry_connection_errors() -> None:
    transport = CountingTransport()
    async with (
        raw_server(answer=ALIVE, drop=2) as server,
        KairosClient(server.url, retries=2, transport=transport) as client,
    ):
        assert (await client.live()).status == "alive"
    assert server.connections == 3
    assert transport.attempts == 2


async def test_reads_give_up_after_the_retries() -> None:
    transport = CountingTransport()
    async with (
        raw_server(answer=ALIVE, drop=100) as server,
        KairosClient(server.url, retries=2, transport=transport) as client,
    ):
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable, match="broke off"):
            await client.config_status()
        elapsed = time.monotonic() - started
    assert transport.attempts == 3
    assert 3 <= server.connections <= 6
    assert 0.3 <= elapsed < 5  # backoff 0.1 s, then 0.2 s


async def test_writes_are_never_retried() -> None:
    transport = CountingTransport()
    async with (
        raw_server(answer=ALIVE, drop=100) as server,
        KairosClient(server.url, retries=5, transport=transport) as client,
    ):
        with pytest.raises(GatewayUnavailable):
            await client.create_route(ROUTE)
        with pytest.raises(GatewayUnavailable):
            await client.reload()
        assert server.connections == 2  # aiohttp does not resend a POST either
        with pytest.raises(GatewayUnavailable):
            await client.delete_route("/a")
    assert transport.attempts == 3
    assert server.connections <= 4  # DELETE is idempotent: aiohttp may resend it once


async def test_retries_zero_means_one_attempt() -> None:
    transport = CountingTransport()
    async with (
        raw_server(answer=ALIVE, drop=100) as server,
        KairosClient(server.url, retries=0, transport=transport) as client,
    ):
        with pytest.raises(GatewayUnavailable):
            await client.live()
    assert transport.attempts == 1


async def test_a_bad_query_parameter_is_a_bad_request(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    async with client_for(gw) as client:
        with pytest.raises(BadRequest) as caught:
            await client.metrics_history(range="forever")
        assert caught.value.status == 400
        assert "range=" in caught.value.detail


async def test_a_non_problem_error_body_is_still_an_api_error() -> None:
    html = http_answer("502 Bad Gateway", b"<html>upstream down</html>", "text/html")
    async with raw_server(answer=html) as server, KairosClient(server.url) as client:
        with pytest.raises(ServerError) as caught:
            await client.config_status()
    error = caught.value
    assert isinstance(error, ApiError)
    assert error.status == 502
    assert error.problem.type == "about:blank"
    assert error.problem.title == "Bad Gateway"
    assert error.detail == "<html>upstream down</html>"


@pytest.mark.parametrize(
    "answer",
    [
        http_answer("200 OK", b"not json", "text/plain"),
        http_answer("200 OK", b'{"status":"sleeping"}'),
    ],
)
async def test_an_unexpected_answer_is_invalid_response(answer: bytes) -> None:
    async with raw_server(answer=answer) as server, KairosClient(server.url) as client:
        with pytest.raises(InvalidResponse):
            await client.live()


async def test_every_wait_is_bounded_even_on_a_custom_transport() -> None:
    class Stuck:
        async def send(self, *args: object) -> None:
            await asyncio.sleep(3600)

        async def aclose(self) -> None:
            pass

    async with KairosClient("http://gateway.invalid", timeout=0.1, transport=Stuck()) as client:  # type: ignore[arg-type]
        with pytest.raises(GatewayTimeout):
            await client.health()
