"""The fake LLM provider (examples/fake_llm.py) for tests, and AI-route configs."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[1]


def load_fake_llm() -> ModuleType:
    """examples/fake_llm.py as a module (examples/ is not a package)."""
    name = "kairos_examples_fake_llm"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / "fake_llm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


FakeFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_fake() -> AsyncIterator[FakeFactory]:
    """``await start_fake(**options)``: a `FakeLLM` on a free port, stopped after the test."""
    fake_llm = load_fake_llm()
    started: list[Any] = []

    async def make(**options: Any) -> Any:
        fake = await fake_llm.FakeLLM(**options).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


def ai_route(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A route answered by the ``ai`` plugin with ``config``; no backends."""
    return {
        "external_path": "/v1/{*rest}",
        "internal_path": "/v1/{*rest}",
        "methods": ["GET", "POST"],
        "plugins": [{"name": "ai", "config": config}],
        **extra,
    }


def provider(fake: Any, kind: str = "openai", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "url": f"{fake.url}/v1", **extra}


def one_target(fake: Any, **extra: Any) -> dict[str, Any]:
    """An ``ai`` config with one OpenAI-compatible provider ``p`` behind the alias
    ``fast`` (model ``m``), plus ``extra`` settings."""
    return {
        "providers": {"p": provider(fake)},
        "models": {"fast": {"targets": [{"provider": "p", "model": "m"}]}},
        **extra,
    }


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The ``data`` of each event of a streamed response, as it arrives."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.decode().splitlines():
                if line.startswith("data: "):
                    yield line[len("data: ") :]


def content_of(chunks: list[str]) -> str:
    """The text a client assembles from chat-completion chunks."""
    out = []
    for data in chunks:
        if data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices", []):
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                out.append(piece)
    return "".join(out)
