"""The transport seam: what the client sends, and how it reads answers, in memory."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from kairos_client import (
    DEFAULT_URL,
    GatewayUnavailable,
    KairosClient,
    MockTransport,
    RateLimited,
    RawResponse,
    ServerError,
    Transport,
    TransportRequest,
)
from kairos_client.transport import AiohttpTransport
from kairos_core import Router

from tests.client.support import http_answer, raw_server

ROUTE = Router.model_validate(
    {
        "external_path": "/api/users/{id}",
        "internal_path": "/users/{id}",
        "methods": ["GET"],
        "backends": [{"host": "http://127.0.0.1", "port": 3000}],
    }
)
ROUTE_JSON = ROUTE.model_dump(mode="json", exclude_none=True)


def test_the_transports_meet_the_protocol() -> None:
    assert isinstance(AiohttpTransport(), Transport)
    assert isinstance(MockTransport(lambda r: RawResponse(200)), Transport)


async def test_what_the_client_sends() -> None:
    def handler(request: TransportRequest) -> RawResponse:
        return RawResponse.json(200, ROUTE_JSON, {"ETag": '"7-abc"'})

    mock = MockTransport(handler)
    async with KairosClient("http://gw:5900/", token="t0ken", transport=mock) as client:
        result = await client.update_route(
            ROUTE.external_path, ROUTE, method="GET", if_match='"6-x"'
        )
        assert result.value == ROUTE
        assert result.etag == '"7-abc"'
    assert mock.closed
    [sent] = mock.requests
    assert sent.method == "PUT"
    url = urlsplit(sent.url)
    assert url.path == "/api/routes/%2Fapi%2Fusers%2F%7Bid%7D"
    assert parse_qs(url.query) == {"method": ["GET"]}
    assert sent.headers["Authorization"] == "Bearer t0ken"
    assert sent.headers["If-Match"] == '"6-x"'
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body is not None
    assert json.loads(sent.body) == ROUTE_JSON


async def test_reads_send_no_body_and_no_token_when_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAIROS_GATEWAY_URL", raising=False)
    monkeypatch.delenv("KAIROS_ADMIN_TOKEN", raising=False)
    mock = MockTransport(lambda r: RawResponse.json(200, {"status": "alive"}))
    async with KairosClient(transport=mock) as client:
        assert (await client.live()).status == "alive"
    [sent] = mock.requests
    assert sent.url == DEFAULT_URL + "/live"
    assert sent.body is None
    assert "Authorization" not in sent.headers
    assert "Content-Type" not in sent.headers


async def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIROS_GATEWAY_URL", "https://gateway.example:8443/kairos")
    monkeypatch.setenv("KAIROS_ADMIN_TOKEN", "from-env")
    mock = MockTransport(lambda r: RawResponse.json(200, {"status": "alive"}))
    async with KairosClient(transport=mock) as client:
        await client.live()
        assert "from-env" not in repr(client)
    [sent] = mock.requests
    assert sent.url == "https://gateway.example:8443/kairos/live"
    assert sent.headers["Authorization"] == "Bearer from-env"


@pytest.mark.parametrize("url", ["ftp://x", "localhost:5900", "http://x/?a=1"])
def test_a_bad_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        KairosClient(url)


async def test_an_async_handler_and_an_outage() -> None:
    calls = 0

    async def handler(request: TransportRequest) -> RawResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise GatewayUnavailable("simulated outage")
        return RawResponse.json(200, {"status": "alive"})

    async with KairosClient(transport=MockTransport(handler), retries=1) as client:
        assert (await client.live()).status == "alive"
    assert calls == 2


async def test_error_answers_in_memory() -> None:
    def handler(request: TransportRequest) -> RawResponse:
        if request.url.endswith("/api/metrics"):
            problem = {
                "type": "rate_limited",
                "title": "Too many requests",
                "status": 429,
                "detail": "slow down",
                "request_id": "r1",
                "retry_after_s": 3,
            }
            return RawResponse.json(429, problem, {"Retry-After": "3"})
        problem = {
            "type": "not_persisted",
            "title": "Change not persisted",
            "status": 503,
            "detail": "disk full",
            "request_id": "r2",
        }
        return RawResponse.json(503, problem)

    async with KairosClient(transport=MockTransport(handler)) as client:
        with pytest.raises(RateLimited) as limited:
            await client.metrics()
        assert limited.value.retry_after_s == 3
        assert limited.value.request_id == "r1"
        with pytest.raises(ServerError) as failed:
            await client.delete_route("/a")
        assert failed.value.problem.type == "not_persisted"
        assert str(failed.value) == "503 Change not persisted: disk full"


async def test_a_session_of_your_own_is_left_open() -> None:
    alive = http_answer("200 OK", b'{"status":"alive"}')
    async with raw_server(answer=alive) as server, aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session=session)
        async with KairosClient(server.url, transport=transport) as client:
            assert (await client.live()).status == "alive"
        assert not session.closed
