"""`kairos ai usage` and `KairosClient.ai_usage()` against a gateway whose AI route
talks to the fake provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.ai_support import ai_route, load_fake_llm, provider
from tests.cli.support import kairos
from tests.client.support import client_for
from tests.conftest import GatewayFactory, RunningGateway

fake_llm = load_fake_llm()
WORDS = len(fake_llm.DEFAULT_REPLY.split())


@pytest.fixture
async def ai_gateway(gateway_factory: GatewayFactory) -> AsyncIterator[RunningGateway]:
    fake = await fake_llm.FakeLLM(usage=False).start()
    config: dict[str, Any] = {
        "providers": {"p": provider(fake)},
        "models": {"fast": {"targets": [{"provider": "p", "model": "m"}]}},
        "consumer": "header:X-Team",
    }
    gw = await gateway_factory({"version": 1, "routers": [ai_route(config)]})
    async with aiohttp.ClientSession() as session:
        for team in ("red", "blue"):
            body = {"model": "fast", "messages": [{"role": "user", "content": "hi there"}]}
            async with session.post(
                gw.url + "/v1/chat/completions", json=body, headers={"X-Team": team}
            ) as resp:
                assert resp.status == 200
    yield gw
    await fake.stop()


async def test_usage_table_json_and_filters(ai_gateway: RunningGateway) -> None:
    shown = await kairos("ai", "usage", url=ai_gateway.url)
    assert shown.code == 0, shown.stderr
    assert "header:red" in shown.stdout
    assert "header:blue" in shown.stdout
    assert "estimated" in shown.stdout  # the fake reported no usage
    assert "closed" in shown.stdout  # the target's breaker
    machine = await kairos("--json", "ai", "usage", "--consumer", "header:red", url=ai_gateway.url)
    assert machine.code == 0, machine.stderr
    report = json.loads(machine.stdout)
    assert [r["consumer"] for r in report["usage"]] == ["header:red"]
    assert report["usage"][0]["estimated_tokens"] > 0


async def test_usage_without_an_ai_route_says_so(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    shown = await kairos("ai", "usage", url=gw.url)
    assert shown.code == 0, shown.stderr
    assert "no AI usage yet" in shown.stdout


async def test_the_sdk_reads_the_usage(ai_gateway: RunningGateway) -> None:
    async with client_for(ai_gateway) as client:
        report = await client.ai_usage()
    assert {r.consumer for r in report.usage} == {"header:red", "header:blue"}
    assert all(r.requests == 1 for r in report.usage)
    assert report.targets[0].breaker == "closed"
    assert sum(report.minutes[-1].tokens_by_consumer.values()) > 0
