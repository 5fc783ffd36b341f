"""The bundled ``ai`` plugin against fake OpenAI- and Anthropic-compatible providers
(real HTTP servers speaking the real wire formats, examples/fake_llm.py): routing by
alias and weight, fallback, streaming, translation, usage, token limits, guards, and
keys that never leak."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from kairos_core import ConfigError, load_config
from kairos_gateway.ai import AiPolicy
from multidict import CIMultiDict

from tests.ai_support import (
    FakeFactory,
    ai_route,
    content_of,
    load_fake_llm,
    one_target,
    provider,
    session,
    sse_events,
    start_fake,
)
from tests.conftest import GatewayFactory, RunningGateway
from tests.redis_server import RedisServer
from tests.support import eventually, unused_port

__all__ = ["session", "start_fake"]  # fixtures

fake_llm = load_fake_llm()
REPLY = fake_llm.DEFAULT_REPLY
WORDS = len(REPLY.split())
KEY = "sk-test-0123456789abcdef0123456789"


def chat(model: str = "fast", text: str = "Say hello to me", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


_OPENED: list[RunningGateway] = []


@pytest.fixture(autouse=True)
async def _calls_at_rest(gateway_factory: GatewayFactory) -> AsyncIterator[None]:
    """After every test (its gateways still running): no target has a call in flight
    and no upstream connection is still checked out."""
    yield
    opened = list(_OPENED)
    _OPENED.clear()
    for gw in opened:
        await _at_rest(gw)


async def _at_rest(gw: RunningGateway) -> None:
    runtime = gw.gateway.runtime
    state = runtime.services.kept.get("ai")
    if state is None:
        return
    targets = state.targets()
    await eventually(lambda: all(t.inflight == 0 for t in targets.values()), timeout=2)
    pool = runtime.pool

    def busy() -> int:
        stats = [pool.endpoint_stats(p.endpoint) for p in _providers(runtime)]
        return sum(s.busy for s in stats if s is not None)

    await eventually(lambda: busy() == 0, timeout=2)


def _providers(runtime: Any) -> list[Any]:
    return [
        provider
        for route in runtime.snapshot.routes
        for policy in route.chain.policies
        if isinstance(policy, AiPolicy)
        for provider in policy.providers.values()
    ]


async def gateway_for(factory: GatewayFactory, config: dict[str, Any]) -> RunningGateway:
    gw = await factory({"version": 1, "routers": [ai_route(config)]})
    _OPENED.append(gw)
    return gw


async def post(
    session: aiohttp.ClientSession,
    gw: RunningGateway,
    body: dict[str, Any],
    path: str = "/v1/chat/completions",
    **headers: str,
) -> tuple[int, CIMultiDict[str], Any]:
    async with session.post(gw.url + path, json=body, headers=headers) as resp:
        text = await resp.text()
        try:
            document = json.loads(text)
        except ValueError:
            document = text
        return resp.status, CIMultiDict(resp.headers), document


async def stream(
    session: aiohttp.ClientSession, gw: RunningGateway, body: dict[str, Any]
) -> tuple[int, list[str]]:
    async with session.post(gw.url + "/v1/chat/completions", json={**body, "stream": True}) as resp:
        return resp.status, [data async for data in sse_events(resp)]


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


async def scrape(session: aiohttp.ClientSession, gw: RunningGateway) -> str:
    async with session.get(gw.url + "/metrics") as resp:
        return await resp.text()


# -- routing ---------------------------------------------------------------------------


async def test_an_alias_goes_to_its_target_with_the_gateways_key_not_the_clients(
    gateway_factory: GatewayFactory,
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_KEY", KEY)
    fake = await start_fake(api_key=KEY)
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"main": provider(fake, api_key_env="FAKE_KEY")},
            "models": {"fast": {"targets": [{"provider": "main", "model": "gpt-small"}]}},
        },
    )
    status, _, got = await post(
        session, gw, chat(), Authorization="Bearer client-own-key", **{"X-Api-Key": "nope"}
    )
    assert status == 200, got
    assert got["choices"][0]["message"]["content"] == REPLY
    assert got["model"] == "gpt-small"  # the model that answered
    [seen] = fake.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "gpt-small"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert "x-api-key" not in seen.headers


async def test_models_lists_the_aliases_without_calling_a_provider(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    target = [{"provider": "p", "model": "m"}]
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"p": provider(fake)},
            "models": {"fast": {"targets": target}, "smart": {"targets": target}},
        },
    )
    async with session.get(gw.url + "/v1/models") as resp:
        assert resp.status == 200
        got = await resp.json()
    assert [m["id"] for m in got["data"]] == ["fast", "smart"]
    assert fake.requests == []


async def test_weighted_targets_share_the_traffic_by_weight(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    heavy, light = await start_fake(name="heavy"), await start_fake(name="light")
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"heavy": provider(heavy), "light": provider(light)},
            "models": {
                "fast": {
                    "strategy": "weighted",
                    "targets": [
                        {"provider": "heavy", "model": "a", "weight": 3},
                        {"provider": "light", "model": "b", "weight": 1},
                    ],
                }
            },
        },
    )
    for _ in range(200):
        status, _, _ = await post(session, gw, chat())
        assert status == 200
    share = len(heavy.requests) / 200
    assert 0.62 <= share <= 0.88, share  # 0.75 expected; bounds hold at > 4 sigma
    assert len(heavy.requests) + len(light.requests) == 200


async def test_latency_strategy_prefers_the_faster_target(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    slow, quick = await start_fake(delay_s=0.05), await start_fake()
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"slow": provider(slow), "quick": provider(quick)},
            "models": {
                "fast": {
                    "strategy": "latency",
                    "targets": [
                        {"provider": "slow", "model": "a"},
                        {"provider": "quick", "model": "b"},
                    ],
                }
            },
        },
    )
    for _ in range(12):
        assert (await post(session, gw, chat()))[0] == 200
    # Each is measured once (never-measured targets go first), then the quick one wins.
    assert len(slow.requests) == 1
    assert len(quick.requests) == 11


# -- fallback --------------------------------------------------------------------------


async def fallback_gateway(
    factory: GatewayFactory, first: Any, second: Any, **extra: Any
) -> RunningGateway:
    return await gateway_for(
        factory,
        {
            "providers": {
                "first": provider(first, read_timeout_ms=300),
                "second": provider(second),
            },
            "models": {
                "fast": {
                    "targets": [
                        {"provider": "first", "model": "a"},
                        {"provider": "second", "model": "b"},
                    ]
                }
            },
            **extra,
        },
    )


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_failing_status_falls_back_to_the_next_target(
    gateway_factory: GatewayFactory,
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    status: int,
) -> None:
    first, second = await start_fake(), await start_fake()
    gw = await fallback_gateway(gateway_factory, first, second)
    first.fail_next(status)
    code, _, got = await post(session, gw, chat())
    assert code == 200, got
    assert (len(first.requests), len(second.requests)) == (1, 1)
    text = await scrape(session, gw)
    assert metric(text, "kairos_ai_fallbacks_total") == 1


async def test_a_429_sets_the_target_aside_for_its_retry_after(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    first, second = await start_fake(), await start_fake()
    gw = await fallback_gateway(gateway_factory, first, second)
    first.fail_next(429, retry_after="30")
    for _ in range(3):
        assert (await post(session, gw, chat()))[0] == 200
    # Only the first call went to the throttled target.
    assert (len(first.requests), len(second.requests)) == (1, 3)


async def test_timeouts_and_refused_connections_fall_back(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    first, second = await start_fake(), await start_fake()
    gw = await fallback_gateway(gateway_factory, first, second)
    first.hang_next()
    code, _, got = await post(session, gw, chat())
    assert code == 200, got
    assert len(second.requests) == 1
    await first.stop()  # now nothing listens there
    code, _, got = await post(session, gw, chat())
    assert code == 200, got
    assert len(second.requests) == 2


async def test_when_every_target_fails_the_last_answer_is_the_clients(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    first, second = await start_fake(), await start_fake()
    gw = await fallback_gateway(gateway_factory, first, second)
    first.fail_next(503)
    second.fail_next(429, retry_after="7")
    code, headers, got = await post(session, gw, chat())
    assert code == 429
    assert headers["Retry-After"] == "7"
    assert got["error"]["type"]  # OpenAI's error shape


async def test_no_fallback_once_the_stream_has_begun(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    first, second = await start_fake(), await start_fake()
    gw = await fallback_gateway(gateway_factory, first, second)
    first.cut_stream_after(2)
    with pytest.raises(aiohttp.ClientPayloadError):
        await stream(session, gw, chat())
    assert len(second.requests) == 0


# -- streaming -------------------------------------------------------------------------


async def test_a_stream_is_relayed_chunk_by_chunk(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(chunk_delay_s=0.2)
    gw = await gateway_for(
        gateway_factory,
        one_target(fake),
    )
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    chunks: list[str] = []
    async with session.post(
        gw.url + "/v1/chat/completions", json={**chat(), "stream": True}
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for data in sse_events(resp):
            arrivals.append(loop.time())
            chunks.append(data)
    assert content_of(chunks) == REPLY
    assert chunks[-1] == "[DONE]"
    # Words arrive about 0.2 s apart, not all at the end.
    assert arrivals[-1] - arrivals[1] >= 0.2 * (WORDS - 2)
    # The gateway asked for usage; the client did not, so it sees no usage chunk.
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    assert not any('"usage"' in c for c in chunks)
    text = await scrape(session, gw)
    assert (
        metric(text, "kairos_ai_tokens_total", direction="completion", estimated="false") == WORDS
    )


async def test_a_client_that_asked_for_usage_gets_the_usage_chunk(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        one_target(fake),
    )
    _, chunks = await stream(session, gw, chat(stream_options={"include_usage": True}))
    usage = [json.loads(c)["usage"] for c in chunks[:-1] if '"usage"' in c]
    assert usage
    assert usage[-1]["completion_tokens"] == WORDS


async def test_a_client_leaving_cancels_the_provider_call(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(chunk_delay_s=0.2)
    gw = await gateway_for(
        gateway_factory,
        one_target(fake),
    )
    async with session.post(
        gw.url + "/v1/chat/completions", json={**chat(), "stream": True}
    ) as resp:
        async for _ in sse_events(resp):
            break  # one chunk, then leave
        resp.close()
    await eventually(lambda: fake.cancelled == 1, timeout=3)
    state = gw.gateway.runtime.services.kept["ai"]
    await eventually(lambda: all(t.inflight == 0 for t in state.targets().values()), timeout=2)


# -- Anthropic -------------------------------------------------------------------------


@dataclass
class AnthropicSetup:
    gw: RunningGateway
    fake: Any


@pytest.fixture
async def anthropic(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, monkeypatch: pytest.MonkeyPatch
) -> AnthropicSetup:
    """A gateway whose alias ``fast`` is an Anthropic provider (the fake, wanting the
    key the gateway reads from ``FAKE_KEY``)."""
    monkeypatch.setenv("FAKE_KEY", KEY)
    fake = await start_fake(api_key=KEY)
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"claude": provider(fake, "anthropic", api_key_env="FAKE_KEY")},
            "models": {"fast": {"targets": [{"provider": "claude", "model": "claude-x"}]}},
            "limits": {"max_tokens": 512},
        },
    )
    return AnthropicSetup(gw, fake)


async def test_anthropic_is_spoken_in_the_openai_shape(
    anthropic: AnthropicSetup, session: aiohttp.ClientSession
) -> None:
    gw, fake = anthropic.gw, anthropic.fake
    body = {
        "model": "fast",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Say hello"},
        ],
        "stop": "END",
    }
    status, _, got = await post(session, gw, body)
    assert status == 200, got
    assert got["object"] == "chat.completion"
    assert got["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert got["choices"][0]["finish_reason"] == "stop"
    assert got["usage"]["completion_tokens"] == WORDS
    [seen] = fake.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body["system"] == "be brief"
    assert seen.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
    ]
    assert seen.body["max_tokens"] == 512  # the route's cap, as Anthropic requires one
    assert seen.body["stop_sequences"] == ["END"]


async def test_an_anthropic_stream_becomes_chat_completion_chunks(
    anthropic: AnthropicSetup, session: aiohttp.ClientSession
) -> None:
    status, chunks = await stream(
        session, anthropic.gw, chat(stream_options={"include_usage": True})
    )
    assert status == 200
    assert chunks[-1] == "[DONE]"
    documents = [json.loads(c) for c in chunks[:-1]]
    assert all(d["object"] == "chat.completion.chunk" for d in documents)
    assert content_of(chunks) == REPLY
    assert documents[-2]["choices"][0]["finish_reason"] == "stop"
    assert documents[-1]["usage"]["completion_tokens"] == WORDS


async def test_anthropic_tool_calls_come_back_as_openai_tool_calls(
    anthropic: AnthropicSetup, session: aiohttp.ClientSession
) -> None:
    gw, fake = anthropic.gw, anthropic.fake
    tools = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    status, _, got = await post(session, gw, chat(text="please use tool", tools=tools))
    assert status == 200, got
    [call] = got["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "search"
    assert json.loads(call["function"]["arguments"]) == {"q": "fake"}
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    assert fake.requests[0].body["tools"][0]["name"] == "search"
    # Streamed: the arguments arrive in pieces, as OpenAI sends them.
    _, chunks = await stream(session, gw, chat(text="please use tool", tools=tools))
    pieces = [
        call
        for c in chunks[:-1]
        for choice in json.loads(c)["choices"]
        for call in choice["delta"].get("tool_calls", [])
    ]
    assert pieces[0]["function"]["name"] == "search"
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"q": "fake"}


# -- usage, estimates, cost ------------------------------------------------------------


async def test_usage_and_cost_are_counted_per_consumer_and_model(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        one_target(
            fake,
            consumer="header:X-Team",
            costs={"m": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}},
        ),
    )
    for team in ("red", "red", "blue"):
        assert (await post(session, gw, chat(text="one two three"), **{"X-Team": team}))[0] == 200
    text = await scrape(session, gw)
    red = {"consumer": "header:red", "provider": "p", "model": "m"}
    assert metric(text, "kairos_ai_requests_total", **red) == 2
    assert metric(text, "kairos_ai_tokens_total", direction="prompt", **red) == 6
    assert metric(text, "kairos_ai_tokens_total", direction="completion", **red) == 2 * WORDS
    assert metric(text, "kairos_ai_cost_total", **red) == pytest.approx((6 + 4 * WORDS) / 1000)
    async with session.get(gw.url + "/api/ai/usage") as resp:
        assert resp.status == 200
        report = await resp.json()
    rows = {r["consumer"]: r for r in report["usage"]}
    assert rows["header:blue"]["completion_tokens"] == WORDS
    assert sum(report["minutes"][-1]["tokens_by_consumer"].values()) == 9 + 3 * WORDS


async def test_a_consumer_keyed_by_a_credential_header_is_shown_by_digest(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        one_target(fake, consumer="header:X-Api-Key"),
    )
    client_key = "client-secret-key-123456"
    assert (await post(session, gw, chat(), **{"X-Api-Key": client_key}))[0] == 200
    text = await scrape(session, gw)
    async with session.get(gw.url + "/api/ai/usage") as resp:
        report = await resp.text()
    assert client_key not in text
    assert client_key not in report
    assert '"consumer":"header:#' in report


async def test_a_provider_without_usage_is_estimated_and_labelled_so(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(usage=False)
    gw = await gateway_for(
        gateway_factory,
        one_target(fake),
    )
    assert (await post(session, gw, chat()))[0] == 200
    _, chunks = await stream(session, gw, chat())
    assert content_of(chunks) == REPLY
    text = await scrape(session, gw)
    assert metric(text, "kairos_ai_tokens_total", direction="completion", estimated="true") > 0
    assert metric(text, "kairos_ai_tokens_total", direction="completion", estimated="false") == 0


# -- token limits ----------------------------------------------------------------------


async def test_token_limits_refuse_with_429_and_ratelimit_fields(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    per_minute = 2 * (WORDS + 10)
    gw = await gateway_for(
        gateway_factory,
        one_target(fake, token_limits={"key": "header:X-Team", "tokens_per_minute": per_minute}),
    )
    served = 0
    for _ in range(5):
        status, headers, got = await post(session, gw, chat(), **{"X-Team": "red"})
        if status == 429:
            break
        served += 1
    assert 1 <= served <= 3
    assert got["type"].endswith("token_limit_exceeded")
    assert int(headers["Retry-After"]) >= 1
    assert headers["RateLimit"].startswith('"tokens";r=')
    # Another consumer is not affected.
    assert (await post(session, gw, chat(), **{"X-Team": "blue"}))[0] == 200


async def test_token_limits_are_shared_by_two_gateways_through_redis(
    gateway_factory: GatewayFactory,
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    fake = await start_fake()
    config = one_target(
        fake,
        token_limits={
            "key": "ip",
            # Three calls' real usage (4 prompt words + the reply) fit, a fourth's
            # estimate (10 tokens) does not.
            "tokens_per_day": 3 * (4 + WORDS) + 5,
            "store": {"type": "redis", "url": redis_server.url},
        },
    )
    one, two = (
        await gateway_for(gateway_factory, config),
        await gateway_for(gateway_factory, config),
    )
    statuses = []
    for gw in (one, two, one, two, one, two):
        statuses.append((await post(session, gw, chat()))[0])
    assert statuses.count(200) == 3, statuses  # one budget for both gateways
    assert statuses[3:] == [429, 429, 429]


# -- guards ----------------------------------------------------------------------------


async def test_guards_refuse_with_a_problem_naming_the_rule(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"p": provider(fake)},
            "models": {
                "fast": {"targets": [{"provider": "p", "model": "m"}]},
                "big": {"targets": [{"provider": "p", "model": "m"}]},
            },
            "allowed_models": ["fast"],
            "limits": {"max_tokens": 100, "max_prompt_tokens": 50},
            "guard": {"deny": [{"name": "no-ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b"}]},
        },
    )
    cases = [
        (chat(text="my number is 123-45-6789"), 400, "no-ssn"),
        (chat(max_tokens=101), 400, "max_tokens must be <= 100"),
        (chat(text="word " * 200), 400, "at most 50"),
        (chat(model="big"), 403, "not allowed"),
        (chat(model="nope"), 403, "not allowed"),
        ({"messages": []}, 400, "model"),
    ]
    for body, status, detail in cases:
        code, headers, got = await post(session, gw, body)
        assert code == status, (body, got)
        assert headers["Content-Type"] == "application/problem+json"
        assert detail in got["detail"]
    async with session.post(gw.url + "/v1/chat/completions", data=b"{not json") as resp:
        assert resp.status == 400
    assert fake.requests == []


async def test_the_routes_body_limit_is_not_lifted_by_the_plugins(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    config = one_target(fake)
    gw = await gateway_factory({"version": 1, "routers": [ai_route(config, max_body_size=2048)]})
    code, _, got = await post(session, gw, chat(text="word " * 1000))
    assert code == 413, got
    assert fake.requests == []


async def test_the_response_cache_answers_an_identical_call(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        one_target(fake, cache={"ttl_s": 60}),
    )
    first = await post(session, gw, chat())
    await eventually(lambda: True)
    second = await post(session, gw, chat())
    assert first[2] == second[2]
    assert second[1].get("X-Cache") == "HIT"
    assert len(fake.requests) == 1
    # Another prompt, or a streamed call, goes to the provider.
    await post(session, gw, chat(text="something else"))
    await stream(session, gw, chat())
    assert len(fake.requests) == 3


# -- secrets ---------------------------------------------------------------------------


async def test_keys_never_reach_logs_config_or_errors(
    gateway_factory: GatewayFactory,
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_KEY", KEY)
    fake = await start_fake(api_key="another-key-the-provider-wants")
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"p": provider(fake, api_key_env="FAKE_KEY")},
            "models": {"fast": {"targets": [{"provider": "p", "model": "m"}]}},
        },
    )
    caplog.set_level(logging.DEBUG)
    status, _, got = await post(session, gw, chat())
    assert status == 502  # the provider refused the gateway's key: not the client's fault
    assert KEY not in json.dumps(got)
    async with session.get(gw.url + "/api/config") as resp:
        config_text = await resp.text()
    assert KEY not in config_text
    assert "FAKE_KEY" in config_text  # the variable's name is not a secret
    assert KEY not in caplog.text
    assert all(KEY not in line for line in gw.access_lines())


async def test_a_provider_error_quoting_the_key_is_scrubbed(
    gateway_factory: GatewayFactory,
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_KEY", KEY)
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        {
            "providers": {"p": provider(fake, api_key_env="FAKE_KEY")},
            "models": {"fast": {"targets": [{"provider": "p", "model": "m"}]}},
            "fallback_on": [],
        },
    )
    fake.fail_next(400, message=f"bad request sent with key {KEY}")
    status, _, got = await post(session, gw, chat())
    assert status == 400
    assert KEY not in json.dumps(got)
    assert "[redacted]" in got["error"]["message"]


# -- configuration ---------------------------------------------------------------------


def test_configuration_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISSING_KEY", raising=False)
    bad = [
        (
            {
                "providers": {"p": {"kind": "openai", "url": "http://x/v1"}},
                "models": {"m": {"targets": [{"provider": "q", "model": "x"}]}},
            },
            "no provider named 'q'",
        ),
        (
            {
                "providers": {
                    "p": {"kind": "openai", "url": "http://x/v1", "api_key_env": "MISSING_KEY"}
                },
                "direct_models": True,
            },
            "MISSING_KEY is not set",
        ),
        (
            {"providers": {"p": {"kind": "gemini", "url": "http://x/v1"}}, "direct_models": True},
            "kind",
        ),
        ({"providers": {"p": {"kind": "openai", "url": "http://x/v1"}}}, "give models"),
        (
            {
                "providers": {"p": {"kind": "openai", "url": "http://x/v1"}},
                "direct_models": True,
                "guard": {"deny": [{"name": "r", "pattern": "("}]},
            },
            "regular expression",
        ),
    ]
    from kairos_gateway import PluginRegistry

    for config, message in bad:
        loaded = load_config({"version": 1, "routers": [ai_route(config)]})
        with pytest.raises(ConfigError) as caught:
            PluginRegistry(group=None).check(loaded)
        text = str(caught.value) + " ".join(e.message for e in caught.value.errors)
        assert message in text, text
        assert any(e.loc[:3] == ("routers", 0, "plugins") for e in caught.value.errors)


def test_a_route_without_backends_needs_the_ai_plugin() -> None:
    route = ai_route(
        {"providers": {"p": {"kind": "openai", "url": "http://x/v1"}}, "direct_models": True}
    )
    load_config({"version": 1, "routers": [route]})
    plain = {**route, "plugins": []}
    with pytest.raises(ConfigError, match=r"routers\[0\]\.backends: field required"):
        load_config({"version": 1, "routers": [plain]})


async def test_a_route_with_the_ai_plugin_is_not_reported_down(
    gateway_factory: GatewayFactory, start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    gw = await gateway_for(
        gateway_factory,
        {"providers": {"p": provider(fake)}, "direct_models": True},
    )
    async with session.get(gw.url + "/ready") as resp:
        assert resp.status == 200
    status, _, got = await post(session, gw, chat(model="p/direct-model"))
    assert status == 200, got
    assert fake.requests[0].body["model"] == "direct-model"
    _ = unused_port
