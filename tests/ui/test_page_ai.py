"""The Metrics page's AI section, with NiceGUI's simulated `User`, against a real
gateway whose AI route talks to the fake provider (examples/fake_llm.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kairos_ui.pages.ai_section import NO_AI_ROUTE
from nicegui.testing import User
from nicegui.testing.user_simulation import user_simulation

from tests.ai_support import ai_route, load_fake_llm, provider
from tests.conftest import GatewayFactory, RunningGateway
from tests.support import eventually

from .conftest import MAIN
from .helpers import element

fake_llm = load_fake_llm()


@pytest.fixture
async def ai_gateway(gateway_factory: GatewayFactory) -> AsyncIterator[RunningGateway]:
    """Alias ``fast``: target ``first`` (which reports no usage), falling back to
    ``second``; alias ``smart``: ``second``; consumers by team. Three calls: red asks for
    fast, blue for smart, red for fast again while ``first`` fails once (a fallback)."""
    first = await fake_llm.FakeLLM(usage=False).start()
    second = await fake_llm.FakeLLM().start()
    config: dict[str, Any] = {
        "providers": {"first": provider(first), "second": provider(second)},
        "models": {
            "fast": {
                "targets": [
                    {"provider": "first", "model": "small-1"},
                    {"provider": "second", "model": "big-2"},
                ]
            },
            "smart": {"targets": [{"provider": "second", "model": "big-2"}]},
        },
        "consumer": "header:X-Team",
    }
    gw = await gateway_factory({"version": 1, "routers": [ai_route(config)]})
    async with aiohttp.ClientSession() as session:
        for team, model, fail in (
            ("red", "fast", False),
            ("blue", "smart", False),
            ("red", "fast", True),
        ):
            body = {"model": model, "messages": [{"role": "user", "content": "hi there"}]}
            if fail:
                first.fail_next(500)
            async with session.post(
                gw.url + "/v1/chat/completions", json=body, headers={"X-Team": team}
            ) as resp:
                assert resp.status == 200, await resp.text()
    yield gw
    await first.stop()
    await second.stop()


def series(user: User, marker: str) -> dict[str, int]:
    """Each series of a chart and its total."""
    return {
        s["name"]: sum(v for _, v in s["data"]) for s in element(user, marker).options["series"]
    }


async def test_the_section_shows_models_consumers_and_fallbacks(
    ai_gateway: RunningGateway, ui_env: Any
) -> None:
    ui_env(ai_gateway.url)
    async with user_simulation(main_file=MAIN) as user:
        await user.open("/metrics")
        await user.should_see(marker="ai-usage-table", retries=40)
        await eventually(lambda: element(user, "ai-usage-table").rows != [])
        rows = element(user, "ai-usage-table").rows
        shown = {(r["consumer"], r["provider"], r["model"]) for r in rows}
        assert ("header:red", "first", "small-1") in shown
        assert ("header:red", "second", "big-2") in shown  # the fallback
        assert ("header:blue", "second", "big-2") in shown
        estimated = [r for r in rows if r["provider"] == "first" and r["errors"] == 0]
        assert all(r["prompt_tokens"].startswith("\u2248") for r in estimated)  # no usage sent
        targets = {r["target"]: r for r in element(user, "ai-target-table").rows}
        assert {name.rsplit("#", 1)[1] for name in targets} == {"small-1", "big-2"}
        assert {r["breaker"] for r in targets.values()} == {"closed"}
        by_model = series(user, "ai-tokens-model")
        by_consumer = series(user, "ai-tokens-consumer")
        assert set(by_model) == {"fast", "smart"}  # as clients name them
        assert set(by_consumer) == {"header:red", "header:blue"}
        assert sum(by_model.values()) == sum(by_consumer.values()) > 0
        assert series(user, "ai-problems") == {"errors": 1, "fallbacks": 1}
        assert element(user, "ai-tokens-model").options["yAxis"]["name"] == "tokens/min"
        await user.should_see("1 min steps")
        await user.should_not_see(NO_AI_ROUTE)
        await user.should_not_see("cannot be reached")


async def test_without_an_ai_route_one_muted_line(user: User) -> None:
    await user.open("/metrics")
    await user.should_see(NO_AI_ROUTE, retries=40)
    await user.should_not_see(marker="ai-tokens-model")
    await user.should_not_see(marker="ai-usage-table")
