"""The fake LLM provider (examples/fake_llm.py) speaks the OpenAI and Anthropic wire
formats as its docstring states, streaming and scripted failures included: a real
server on a free port, a real aiohttp client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.ai_support import FakeFactory, load_fake_llm, session, start_fake
from tests.support import eventually, unused_port

__all__ = ["session", "start_fake"]  # fixtures

fake_llm = load_fake_llm()
REPLY = fake_llm.DEFAULT_REPLY
ANTHROPIC = {"anthropic-version": "2023-06-01"}


def chat(text: str = "Say hello to me", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}


def anthropic_body(text: str = "Say hello to me", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE frame."""
    events: list[tuple[str | None, str]] = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        name = None
        data: list[str] = []
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
        events.append((name, "\n".join(data)))
    return events


async def post_stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str
) -> tuple[aiohttp.ClientResponse, list[tuple[str | None, str]]]:
    async with session.post(url, json={**body, "stream": True}, headers=headers) as resp:
        return resp, sse_events(await resp.text())


def openai_chunks(events: list[tuple[str | None, str]]) -> list[dict[str, Any]]:
    assert events[-1] == (None, "[DONE]")
    return [json.loads(data) for _, data in events[:-1]]


async def test_openai_chat_answers_the_reply_with_word_counts(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    body = {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "Say hello to me"}]},
        ],
    }
    async with session.post(
        f"{fake.url}/v1/chat/completions?x=1", json=body, headers={"X-Trace": "t1"}
    ) as resp:
        assert resp.status == 200
        got = await resp.json()
    assert got["id"].startswith("chatcmpl-")
    assert got["object"] == "chat.completion"
    assert got["model"] == "gpt-test"
    assert got["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}
    ]
    words = len(REPLY.split())
    assert got["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": words,
        "total_tokens": 6 + words,
    }
    [seen] = fake.requests
    assert (seen.method, seen.path, seen.query) == ("POST", "/v1/chat/completions", "x=1")
    assert seen.headers["x-trace"] == "t1"
    assert seen.body == body


@pytest.mark.parametrize(
    ("include_usage", "usage_on", "usage_chunk"),
    [(True, True, True), (False, True, False), (True, False, False)],
)
async def test_openai_stream_is_one_word_per_chunk_with_usage_only_when_asked(
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    include_usage: bool,
    usage_on: bool,
    usage_chunk: bool,
) -> None:
    fake = await start_fake(usage=usage_on)
    body = chat(stream_options={"include_usage": include_usage})
    resp, events = await post_stream(session, f"{fake.url}/v1/chat/completions", body)
    assert resp.headers["Content-Type"] == "text/event-stream"
    chunks = openai_chunks(events)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-test" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    with_usage = [c for c in chunks if "usage" in c]
    if usage_chunk:
        assert with_usage == [chunks[-1]]
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == len(REPLY.split())
        chunks = chunks[:-1]
    else:
        assert with_usage == []
    *words, last = chunks[1:]
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert len(words) == len(REPLY.split())
    assert "".join(w["choices"][0]["delta"]["content"] for w in words) == REPLY


async def test_max_tokens_cuts_the_reply(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(reply="one two three four five")
    async with session.post(
        f"{fake.url}/v1/chat/completions", json=chat(max_completion_tokens=3)
    ) as resp:
        got = await resp.json()
    assert got["choices"][0]["message"]["content"] == "one two three "
    assert got["choices"][0]["finish_reason"] == "length"
    assert got["usage"]["completion_tokens"] == 3
    async with session.post(
        f"{fake.url}/v1/messages", json=anthropic_body(max_tokens=2), headers=ANTHROPIC
    ) as resp:
        got = await resp.json()
    assert got["content"] == [{"type": "text", "text": "one two "}]
    assert got["stop_reason"] == "max_tokens"
    assert got["usage"] == {"input_tokens": 4, "output_tokens": 2}


async def test_openai_tool_call_plain_and_streamed(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    body = chat("Please USE TOOL now", tools=tools)
    async with session.post(f"{fake.url}/v1/chat/completions", json=body) as resp:
        choice = (await resp.json())["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "search", "arguments": '{"q": "fake"}'},
            }
        ],
    }
    _, events = await post_stream(session, f"{fake.url}/v1/chat/completions", body)
    deltas = [c["choices"][0]["delta"] for c in openai_chunks(events)]
    first, *pieces, last = deltas
    call = first["tool_calls"][0]
    assert (call["id"], call["type"], call["function"]) == (
        "call_1",
        "function",
        {"name": "search", "arguments": ""},
    )
    assert len(pieces) == 2
    assert json.loads("".join(p["tool_calls"][0]["function"]["arguments"] for p in pieces)) == {
        "q": "fake"
    }
    assert last == {}
    # Without tools declared, the same words get the plain reply.
    async with session.post(f"{fake.url}/v1/chat/completions", json=chat("use tool")) as resp:
        assert (await resp.json())["choices"][0]["message"]["content"] == REPLY


async def test_anthropic_stream_events_in_order(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    body = anthropic_body(system=[{"type": "text", "text": "be brief"}])
    resp, events = await post_stream(session, f"{fake.url}/v1/messages", body, **ANTHROPIC)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    names = [name for name, _ in events]
    words = len(REPLY.split())
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for _, d in events]
    assert [d["type"] for d in data] == names
    assert data[0]["message"]["usage"] == {"input_tokens": 6, "output_tokens": 1}
    assert data[0]["message"]["model"] == "claude-test"
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for d in data[3 : 3 + words]) == REPLY
    assert data[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": words}


async def test_anthropic_tool_use_and_no_usage(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(usage=False)
    body = anthropic_body("use tool please", tools=[{"name": "lookup", "input_schema": {}}])
    async with session.post(f"{fake.url}/v1/messages", json=body, headers=ANTHROPIC) as resp:
        got = await resp.json()
    assert got["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "fake"}}
    ]
    assert got["stop_reason"] == "tool_use"
    assert "usage" not in got
    _, events = await post_stream(session, f"{fake.url}/v1/messages", body, **ANTHROPIC)
    data = [json.loads(d) for _, d in events]
    assert data[1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "lookup",
        "input": {},
    }
    partial = [d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta"]
    assert len(partial) == 2
    assert json.loads("".join(partial)) == {"q": "fake"}
    assert "usage" not in data[0]["message"]
    assert "usage" not in data[-2]


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (anthropic_body(), {}, "anthropic-version"),
        ({k: v for k, v in anthropic_body().items() if k != "max_tokens"}, ANTHROPIC, "max_tokens"),
        (
            anthropic_body() | {"messages": [{"role": "system", "content": "x"}]},
            ANTHROPIC,
            "system",
        ),
    ],
    ids=["no-version", "no-max-tokens", "system-role"],
)
async def test_anthropic_refuses_bad_requests(
    start_fake: FakeFactory,
    session: aiohttp.ClientSession,
    body: dict[str, Any],
    headers: dict[str, str],
    message: str,
) -> None:
    fake = await start_fake()
    async with session.post(f"{fake.url}/v1/messages", json=body, headers=headers) as resp:
        assert resp.status == 400
        got = await resp.json()
    assert got["type"] == "error"
    assert got["error"]["type"] == "invalid_request_error"
    assert message in got["error"]["message"]


async def test_api_key_is_checked_in_each_providers_way(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(api_key="sk-right")
    chat_url = f"{fake.url}/v1/chat/completions"
    for auth in ({}, {"Authorization": "Bearer sk-wrong"}, {"x-api-key": "sk-right"}):
        async with session.post(chat_url, json=chat(), headers=auth) as resp:
            assert resp.status == 401
            error = (await resp.json())["error"]
        assert error["code"] == "invalid_api_key"
        assert set(error) == {"message", "type", "param", "code"}
    async with session.post(
        chat_url, json=chat(), headers={"Authorization": "Bearer sk-right"}
    ) as resp:
        assert resp.status == 200
    messages_url = f"{fake.url}/v1/messages"
    for auth in ({}, {"Authorization": "Bearer sk-right"}, {"x-api-key": "sk-wrong"}):
        async with session.post(
            messages_url, json=anthropic_body(), headers={**ANTHROPIC, **auth}
        ) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["type"] == "authentication_error"
    async with session.post(
        messages_url, json=anthropic_body(), headers={**ANTHROPIC, "x-api-key": "sk-right"}
    ) as resp:
        assert resp.status == 200


async def test_fail_next_answers_provider_shaped_errors_then_recovers(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    fake.fail_next(429, times=2, retry_after="7")
    for _ in range(2):
        async with session.post(f"{fake.url}/v1/chat/completions", json=chat()) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "7"
            error = (await resp.json())["error"]
        assert error["code"] == "rate_limit_exceeded"
    async with session.post(f"{fake.url}/v1/chat/completions", json=chat()) as resp:
        assert resp.status == 200
        assert "Retry-After" not in resp.headers
    fake.fail_next(529)
    async with session.post(
        f"{fake.url}/v1/messages", json=anthropic_body(), headers=ANTHROPIC
    ) as resp:
        assert resp.status == 529
        assert await resp.json() == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "injected failure (529)"},
        }
    assert len(fake.requests) == 4


async def test_hang_next_answers_nothing_until_stop(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    fake.hang_next()

    async def hung_request() -> int:
        async with session.post(f"{fake.url}/v1/chat/completions", json=chat()) as resp:
            return resp.status

    hung = asyncio.create_task(hung_request())
    await eventually(lambda: len(fake.requests) == 1)
    async with session.post(f"{fake.url}/v1/chat/completions", json=chat()) as resp:
        assert resp.status == 200
    assert not hung.done()
    await fake.stop()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await asyncio.wait_for(hung, 5)
    assert fake.cancelled == 0


async def read_contents(resp: aiohttp.ClientResponse, into: list[str]) -> None:
    """Collect the content deltas of an OpenAI stream until its end (bounded)."""
    for _ in range(100):
        line = (await resp.content.readline()).decode()
        if not line:
            return
        if line.startswith("data: {"):
            into.append(json.loads(line[6:])["choices"][0]["delta"].get("content", ""))


async def test_cut_stream_after_closes_mid_stream(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake()
    fake.cut_stream_after(2)
    contents: list[str] = []
    async with session.post(f"{fake.url}/v1/chat/completions", json=chat(stream=True)) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_contents(resp, contents)
    assert "".join(contents) == "Hello from "  # the role chunk, then two words
    _, events = await post_stream(session, f"{fake.url}/v1/chat/completions", chat())
    assert events[-1] == (None, "[DONE]")  # only the next stream was cut
    assert fake.cancelled == 0


async def test_client_leaving_a_stream_counts_as_cancelled(
    start_fake: FakeFactory, session: aiohttp.ClientSession
) -> None:
    fake = await start_fake(chunk_delay_s=0.05)
    async with session.post(
        f"{fake.url}/v1/messages", json=anthropic_body(stream=True), headers=ANTHROPIC
    ) as resp:
        assert (await resp.content.readline()).decode() == "event: message_start\n"
        resp.close()
    await eventually(lambda: fake.cancelled == 1)
    fake.chunk_delay_s = 0
    await post_stream(session, f"{fake.url}/v1/chat/completions", chat())
    assert fake.cancelled == 1  # a stream read to its end is not cancelled


async def test_legacy_completions_embeddings_models_and_unknown_paths(
    session: aiohttp.ClientSession,
) -> None:
    fake = await fake_llm.FakeLLM(name="acme").start(unused_port())
    try:
        body = {"model": "m", "prompt": "once upon a time"}
        async with session.post(f"{fake.url}/v1/completions", json=body) as resp:
            got = await resp.json()
        assert got["object"] == "text_completion"
        assert got["choices"] == [{"text": REPLY, "index": 0, "finish_reason": "stop"}]
        assert got["usage"]["prompt_tokens"] == 4
        _, events = await post_stream(session, f"{fake.url}/v1/completions", body)
        texts = [c["choices"][0]["text"] for c in openai_chunks(events)]
        assert "".join(texts) == REPLY
        assert len(texts) == len(REPLY.split()) + 1  # one per word, then the finish

        for given in ("a b", ["a b", "c"]):
            async with session.post(
                f"{fake.url}/v1/embeddings", json={"model": "e", "input": given}
            ) as resp:
                got = await resp.json()
            assert got["object"] == "list"
            assert [d["index"] for d in got["data"]] == list(range(len(got["data"])))
            assert all(len(d["embedding"]) == 8 for d in got["data"])
            words = 2 if given == "a b" else 3
            assert got["usage"] == {"prompt_tokens": words, "total_tokens": words}
        assert got["data"][0]["embedding"] != got["data"][1]["embedding"]

        async with session.get(f"{fake.url}/v1/models") as resp:
            assert await resp.json() == {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "owned_by": "acme"}],
            }
        async with session.post(f"{fake.url}/v2/elsewhere", json={}) as resp:
            assert resp.status == 404
            assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}
    finally:
        await fake.stop()
