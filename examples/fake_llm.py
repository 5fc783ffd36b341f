"""A fake LLM provider speaking the OpenAI and Anthropic wire formats, streaming included:
try the gateway's AI plugin without an API key, and give tests and benchmarks an
upstream whose every answer is known in advance.

    uv run python examples/fake_llm.py                     # http://127.0.0.1:8090
    uv run python examples/fake_llm.py --port 8091 --delay-ms 200 --chunk-delay-ms 50

    curl -s localhost:8090/v1/chat/completions -d '{"model": "fake-model",
        "messages": [{"role": "user", "content": "Say hello"}]}'
    curl -sN localhost:8090/v1/chat/completions -d '{"model": "fake-model", "stream": true,
        "messages": [{"role": "user", "content": "Say hello"}]}'
    curl -sN localhost:8090/v1/messages -H 'anthropic-version: 2023-06-01' -d '{
        "model": "fake-model", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Say hello"}]}'

Endpoints: OpenAI ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models``; Anthropic ``POST /v1/messages``. Anything
else is a 404 in OpenAI's error shape. Errors always come in the provider's own shape:
OpenAI ``{"error": {"message", "type", "param", "code"}}``, Anthropic
``{"type": "error", "error": {"type", "message"}}``.

The answer is always the configured reply (whatever the model asked for), streamed one
word per chunk: each chunk is a word with the whitespace after it, so the chunks
concatenate to the reply exactly. Token counting is deterministic:

* prompt tokens = the number of whitespace-separated words in the text of all message
  contents (strings, ``text`` parts, the content of Anthropic ``tool_result`` blocks;
  Anthropic's top-level ``system`` counts too, as a system message does for OpenAI;
  the legacy ``prompt`` and the embeddings ``input`` likewise), with no overhead;
* completion tokens = the number of words in the reply sent.

A ``max_tokens`` (or OpenAI ``max_completion_tokens``) below the reply's word count
cuts the reply to that many words: finish_reason ``"length"`` (Anthropic stop_reason
``"max_tokens"``). When the request declares ``tools`` and the last user message
contains "use tool" (any case), the answer is instead a call to the first tool with
the arguments ``{"q": "fake"}`` (2 completion tokens, streamed in two pieces).

In-process use (tests, benchmarks)::

    fake = await FakeLLM(chunk_delay_s=0.01).start()   # a free port on 127.0.0.1
    ... fake.url, fake.requests, fake.fail_next(429, retry_after="1") ...
    await fake.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

from tornado import web
from tornado.http1connection import HTTP1Connection
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

LOOPBACK = "127.0.0.1"
MODEL_ID = "fake-model"
DEFAULT_REPLY = "Hello from the fake provider, one word at a time."
# A tool call always carries these arguments, streamed in these two pieces.
TOOL_ARGUMENT_PIECES = ('{"q": ', '"fake"}')
TOOL_ARGUMENTS = "".join(TOOL_ARGUMENT_PIECES)

Shape = Literal["openai", "anthropic"]
Frame = tuple[str, bool]  # an SSE frame, and whether it carries content


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # without query
    query: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None (no body, or not JSON)


class ProviderError(web.HTTPError):
    """An error answered in the provider's own shape (rendered by `_Endpoint.write_error`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(status)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _anthropic_error_type(status: int) -> str:
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    return _ANTHROPIC_ERROR_TYPES.get(status, fallback)


def _openai_error_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(shape: Shape, status: int, message: str, **extra: str | None) -> dict[str, Any]:
    """The JSON error body each provider sends for ``status``."""
    if shape == "anthropic":
        return {
            "type": "error",
            "error": {"type": _anthropic_error_type(status), "message": message},
        }
    return {
        "error": {
            "message": message,
            "type": _openai_error_type(status),
            "param": extra.get("param"),
            "code": extra.get("code") or _OPENAI_ERROR_CODES.get(status),
        }
    }


# --- what to answer: pure functions of the request -----------------------------------


def split_words(text: str) -> list[str]:
    """One piece per word with the whitespace after it: ``"".join(pieces) == text``
    (leading whitespace rides on the first word)."""
    return re.findall(r"\s*\S+\s*", text)


def text_of(content: Any) -> str:
    """The text in a message content: a string, or a list of parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(text_of(part) for part in content)
    if isinstance(content, dict):
        if content.get("type") == "text":
            return str(content.get("text", ""))
        if content.get("type") == "tool_result":
            return text_of(content.get("content"))
    return ""


def count_words(*texts: str) -> int:
    return sum(len(t.split()) for t in texts)


def embedding_of(text: str) -> list[float]:
    """Eight floats in [-1, 1] derived from the text (same text, same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 127.5 - 1, 6) for b in digest[:8]]


@dataclass(frozen=True)
class Answer:
    pieces: tuple[str, ...]  # reply words, or the tool arguments in two pieces
    tool: str | None  # the tool called, when the answer is a tool call
    truncated: bool
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces)

    def usage(self, shape: Shape) -> dict[str, int]:
        if shape == "anthropic":
            return {"input_tokens": self.prompt_tokens, "output_tokens": self.completion_tokens}
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def finish_reason(self, shape: Shape) -> str:
        if shape == "anthropic":
            return "tool_use" if self.tool else "max_tokens" if self.truncated else "end_turn"
        return "tool_calls" if self.tool else "length" if self.truncated else "stop"


def plan_answer(
    reply: str, *, prompt_tokens: int, max_tokens: int | None, tool: str | None
) -> Answer:
    if tool is not None:
        return Answer(TOOL_ARGUMENT_PIECES, tool, False, prompt_tokens)
    words = split_words(reply)
    truncated = max_tokens is not None and max_tokens < len(words)
    kept = words[:max_tokens] if truncated else words
    return Answer(tuple(kept), None, truncated, prompt_tokens)


def max_tokens_of(body: dict[str, Any], *names: str) -> int | None:
    """The first of ``names`` present in ``body``: a positive integer, else a 400."""
    for name in names:
        if name in body:
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProviderError(400, f"{name}: must be an integer >= 1", param=name)
            return value
    return None


def called_tool(body: dict[str, Any], messages: list[Any], shape: Shape) -> str | None:
    """The first tool's name when tools are declared and the last user message asks
    to "use tool"."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users or "use tool" not in text_of(users[-1].get("content")).lower():
        return None
    first = tools[0]
    declared = first.get("function", {}) if shape == "openai" else first
    name = declared.get("name") if isinstance(declared, dict) else None
    return name if isinstance(name, str) else "tool"


def sse(data: Any, event: str | None = None) -> str:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


# --- HTTP ----------------------------------------------------------------------------


class _Endpoint(web.RequestHandler):
    """Common to every path: record the request, then apply the scripted behaviour
    (hang, delay, injected failure) and the provider's authentication."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
    shape: ClassVar[Shape] = "openai"
    #: Whether ``"stream": true`` makes this endpoint answer with a stream.
    streams: ClassVar[bool] = False
    authenticated: ClassVar[bool] = True

    def initialize(self, fake: FakeLLM) -> None:
        self.fake = fake
        self.payload: Any = None
        self._gone = asyncio.Event()
        self.wants_stream = False  # ``"stream": true`` on an endpoint that streams
        self._unsettled = False  # a stream asked for, not yet delivered in full
        self._hung = False
        self._cut = False

    async def prepare(self) -> None:
        fake = self.fake
        self.payload = fake._record(self.request)
        self.wants_stream = (
            self.streams and isinstance(self.payload, dict) and self.payload.get("stream") is True
        )
        self._unsettled = self.wants_stream
        if fake._take_hang():
            self._hung = True
            await self._gone.wait()  # the client leaves, or stop() closes the connection
            raise web.Finish()
        if fake.delay_s:
            await self._pause(fake.delay_s)
            if self._gone.is_set():
                raise web.Finish()
        failure = fake._take_failure()
        if failure is not None:
            status, retry_after, message = failure
            raise ProviderError(
                status, message or f"injected failure ({status})", retry_after=retry_after
            )
        if self.authenticated:
            self.authenticate()

    def authenticate(self) -> None:
        key = self.fake.api_key
        if key is not None and self.request.headers.get("Authorization") != f"Bearer {key}":
            raise ProviderError(401, "Incorrect API key provided.")

    def json_body(self) -> dict[str, Any]:
        if not isinstance(self.payload, dict):
            raise ProviderError(400, "the request body must be a JSON object")
        return self.payload

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ProviderError):
            if exc.retry_after is not None:
                self.set_header("Retry-After", exc.retry_after)
            body = error_body(self.shape, status_code, exc.message, param=exc.param, code=exc.code)
        else:
            body = error_body(self.shape, status_code, self._reason)
        self.finish(body)

    async def get(self, *_: str) -> None:
        method, path = self.request.method, self.request.path
        raise ProviderError(404, f"Invalid URL ({method} {path})")

    head = post = put = delete = patch = options = get

    # --- streaming --------------------------------------------------------------

    def on_connection_close(self) -> None:
        self._gone.set()
        self._client_left()

    def _client_left(self) -> None:
        if self._unsettled and not (self._hung or self._cut or self.fake._stopping):
            self.fake.cancelled += 1
        self._unsettled = False  # counted once

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake as soon as the client is gone."""
        try:
            async with asyncio.timeout(seconds):
                await self._gone.wait()
        except TimeoutError:
            pass

    async def _send(self, text: str) -> bool:
        """Write and flush ``text``; False when the client is gone."""
        if self._gone.is_set():
            return False
        self.write(text)
        try:
            await self.flush()
        except StreamClosedError:
            self._client_left()
            return False
        return True

    async def stream(self, frames: list[Frame]) -> None:
        """Send the SSE ``frames``, ``chunk_delay_s`` apart, or cut the connection after
        the scripted number of content frames (before the end, in any case)."""
        cut_at = self.fake._take_cut()
        total = sum(1 for _, is_content in frames if is_content)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        if not await self._send(""):  # the head goes out at once, as with real providers
            return
        sent = 0
        for i, (frame, is_content) in enumerate(frames):
            if cut_at is not None and sent >= min(cut_at, total) and (is_content or sent == total):
                self._cut = True
                cast(HTTP1Connection, self.request.connection).stream.close()
                return
            if i and self.fake.chunk_delay_s:
                await self._pause(self.fake.chunk_delay_s)
            if not await self._send(frame):
                return
            sent += is_content
        self._unsettled = False  # delivered in full


class _NotFound(_Endpoint):
    authenticated = False


class _ChatCompletions(_Endpoint):
    streams = True

    async def post(self, *_: str) -> None:
        body = self.json_body()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProviderError(400, "messages: must be a non-empty array", param="messages")
        answer = plan_answer(
            self.fake.reply,
            prompt_tokens=count_words(*(text_of(_content(m)) for m in messages)),
            max_tokens=max_tokens_of(body, "max_completion_tokens", "max_tokens"),
            tool=called_tool(body, messages, "openai"),
        )
        head = {
            "id": self.fake._next_id("chatcmpl-"),
            "object": "chat.completion.chunk" if self.wants_stream else "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL_ID),
        }
        if not self.wants_stream:
            message: dict[str, Any] = {"role": "assistant", "content": answer.text}
            if answer.tool:
                message = {"role": "assistant", "content": None, "tool_calls": [_tool_call(answer)]}
            choice = {
                "index": 0,
                "message": message,
                "finish_reason": answer.finish_reason("openai"),
            }
            self.write({**head, "choices": [choice]} | usage_field(self.fake, answer, "openai"))
            return

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        first: dict[str, Any]
        content: list[dict[str, Any]]
        if answer.tool:
            call = {"index": 0} | _tool_call(answer)
            call["function"] = {"name": answer.tool, "arguments": ""}
            first = {"role": "assistant", "content": None, "tool_calls": [call]}
            content = [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in answer.pieces
            ]
        else:
            first = {"role": "assistant", "content": ""}
            content = [{"content": piece} for piece in answer.pieces]
        frames: list[Frame] = [(chunk(first), False)]
        frames += [(chunk(delta), True) for delta in content]
        frames.append((chunk({}, answer.finish_reason("openai")), False))
        frames += usage_frames(self.fake, body, head, answer)
        frames.append((sse("[DONE]"), False))
        await self.stream(frames)


class _Completions(_Endpoint):
    streams = True

    async def post(self, *_: str) -> None:
        body = self.json_body()
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ProviderError(
                400, "prompt: must be a string or an array of strings", param="prompt"
            )
        answer = plan_answer(
            self.fake.reply,
            prompt_tokens=count_words(*prompts),
            max_tokens=max_tokens_of(body, "max_tokens"),
            tool=None,
        )
        head = {
            "id": self.fake._next_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL_ID),
        }

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"text": text, "index": 0, "finish_reason": finish}

        if not self.wants_stream:
            self.write(
                {**head, "choices": [choice(answer.text, answer.finish_reason("openai"))]}
                | usage_field(self.fake, answer, "openai")
            )
            return
        frames: list[Frame] = [
            (sse({**head, "choices": [choice(p, None)]}), True) for p in answer.pieces
        ]
        frames.append(
            (sse({**head, "choices": [choice("", answer.finish_reason("openai"))]}), False)
        )
        frames += usage_frames(self.fake, body, head, answer)
        frames.append((sse("[DONE]"), False))
        await self.stream(frames)


class _Embeddings(_Endpoint):
    async def post(self, *_: str) -> None:
        body = self.json_body()
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            raise ProviderError(
                400, "input: must be a string or a non-empty array of strings", param="input"
            )
        tokens = count_words(*inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": embedding_of(text)}
            for i, text in enumerate(inputs)
        ]
        self.write(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", MODEL_ID),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class _Models(_Endpoint):
    async def get(self, *_: str) -> None:
        model = {"id": MODEL_ID, "object": "model", "owned_by": self.fake.name}
        self.write({"object": "list", "data": [model]})


class _Messages(_Endpoint):
    shape = "anthropic"
    streams = True

    def authenticate(self) -> None:
        key = self.fake.api_key
        if key is not None and self.request.headers.get("x-api-key") != key:
            raise ProviderError(401, "invalid x-api-key")
        if "anthropic-version" not in self.request.headers:
            raise ProviderError(400, "anthropic-version: header is required")

    async def post(self, *_: str) -> None:
        body = self.json_body()
        if "max_tokens" not in body:
            raise ProviderError(400, "max_tokens: Field required")
        max_tokens = max_tokens_of(body, "max_tokens")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProviderError(400, "messages: must be a non-empty array")
        for i, message in enumerate(messages):
            if isinstance(message, dict) and message.get("role") == "system":
                raise ProviderError(
                    400,
                    f'messages.{i}.role: Unexpected role "system". The Messages API accepts '
                    'a top-level `system` parameter, not "system" as an input message role.',
                )
        answer = plan_answer(
            self.fake.reply,
            prompt_tokens=count_words(
                text_of(body.get("system")), *(text_of(_content(m)) for m in messages)
            ),
            max_tokens=max_tokens,
            tool=called_tool(body, messages, "anthropic"),
        )
        message_id = self.fake._next_id("msg_")
        model = body.get("model", MODEL_ID)
        usage = self.fake.usage
        if not self.wants_stream:
            block: dict[str, Any] = {"type": "text", "text": answer.text}
            if answer.tool:
                block = {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": answer.tool,
                    "input": {"q": "fake"},
                }
            self.write(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [block],
                    "stop_reason": answer.finish_reason("anthropic"),
                    "stop_sequence": None,
                }
                | ({"usage": answer.usage("anthropic")} if usage else {})
            )
            return

        def event(kind: str, **data: Any) -> str:
            return sse({"type": kind, **data}, event=kind)

        started: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if usage:
            started["usage"] = {"input_tokens": answer.prompt_tokens, "output_tokens": 1}
        if answer.tool:
            opened = {"type": "tool_use", "id": "toolu_1", "name": answer.tool, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in answer.pieces]
        else:
            opened = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in answer.pieces]
        ending: dict[str, Any] = {
            "delta": {"stop_reason": answer.finish_reason("anthropic"), "stop_sequence": None}
        }
        if usage:
            ending["usage"] = {"output_tokens": answer.completion_tokens}
        frames: list[Frame] = [
            (event("message_start", message=started), False),
            (event("content_block_start", index=0, content_block=opened), False),
            (event("ping"), False),
        ]
        frames += [(event("content_block_delta", index=0, delta=d), True) for d in deltas]
        frames += [
            (event("content_block_stop", index=0), False),
            (event("message_delta", **ending), False),
            (event("message_stop"), False),
        ]
        await self.stream(frames)


def usage_field(fake: FakeLLM, answer: Answer, shape: Shape) -> dict[str, Any]:
    return {"usage": answer.usage(shape)} if fake.usage else {}


def usage_frames(
    fake: FakeLLM, body: dict[str, Any], head: dict[str, Any], answer: Answer
) -> list[Frame]:
    """OpenAI's last chunk with the usage: only when asked for (and usage is on)."""
    options = body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    if not (asked and fake.usage):
        return []
    return [(sse({**head, "choices": [], "usage": answer.usage("openai")}), False)]


def _content(message: Any) -> Any:
    return message.get("content") if isinstance(message, dict) else None


def _tool_call(answer: Answer) -> dict[str, Any]:
    return {
        "id": "call_1",
        "type": "function",
        "function": {"name": answer.tool, "arguments": TOOL_ARGUMENTS},
    }


# --- the server ----------------------------------------------------------------------


class FakeLLM:
    """The fake provider: start it, point the gateway at `url`, script its next answers
    with `fail_next` / `hang_next` / `cut_stream_after`, read back `requests` and
    `cancelled`."""

    def __init__(
        self,
        *,
        reply: str = DEFAULT_REPLY,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        api_key: str | None = None,
        usage: bool = True,
        name: str = "fake",
    ) -> None:
        self.reply = reply
        #: Waited before every response head (errors included).
        self.delay_s = delay_s
        #: Waited between the frames of a streamed response.
        self.chunk_delay_s = chunk_delay_s
        #: When set, OpenAI requests need ``Authorization: Bearer <key>`` and Anthropic
        #: ones ``x-api-key: <key>``, else 401.
        self.api_key = api_key
        #: False: no usage anywhere in the answers.
        self.usage = usage
        self.name = name
        #: Every request received, in order.
        self.requests: list[Recorded] = []
        #: Streamed answers whose client went away before the end (from the moment the
        #: request was received; hung requests, scripted cuts and stop() do not count).
        self.cancelled = 0
        self.port = 0
        self._stopping = False
        self._hangs = 0
        self._failures: deque[tuple[int, str | None, str | None]] = deque()
        self._cuts: deque[int] = deque()
        self._ids = itertools.count(1)
        self._server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self, port: int = 0) -> FakeLLM:
        """Listen on 127.0.0.1:``port`` (0: a free port, see `url`)."""
        deps = {"fake": self}
        app = web.Application(
            [
                (r"/v1/chat/completions", _ChatCompletions, deps),
                (r"/v1/completions", _Completions, deps),
                (r"/v1/embeddings", _Embeddings, deps),
                (r"/v1/models", _Models, deps),
                (r"/v1/messages", _Messages, deps),
                (r".*", _NotFound, deps),
            ]
        )
        sockets = bind_sockets(port, LOOPBACK)
        self.port = int(sockets[0].getsockname()[1])
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)
        self._stopping = False
        return self

    async def stop(self) -> None:
        """Close the listener and every open connection (streams in progress end)."""
        if self._server is not None:
            self._stopping = True
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        message: str | None = None,
    ) -> None:
        """The next ``times`` requests get ``status`` with a provider-shaped error body
        (saying ``message`` when given; and ``Retry-After`` when given)."""
        self._failures.extend([(status, retry_after, message)] * times)

    def hang_next(self, times: int = 1) -> None:
        """The next ``times`` requests never get an answer (until the client leaves or
        `stop`)."""
        self._hangs += times

    def cut_stream_after(self, chunks: int, times: int = 1) -> None:
        """The next ``times`` streamed answers lose their connection right after
        ``chunks`` content chunks (or after the last one, if there are fewer)."""
        self._cuts.extend([chunks] * times)

    # --- used by the handlers ----------------------------------------------------

    def _record(self, request: HTTPServerRequest) -> Any:
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        headers: dict[str, str] = {}
        for key, value in request.headers.get_all():
            name = key.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        method = request.method or ""
        self.requests.append(Recorded(method, request.path, request.query, headers, body))
        return body

    def _take_hang(self) -> bool:
        if self._hangs:
            self._hangs -= 1
            return True
        return False

    def _take_failure(self) -> tuple[int, str | None, str | None] | None:
        return self._failures.popleft() if self._failures else None

    def _take_cut(self) -> int | None:
        return self._cuts.popleft() if self._cuts else None

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}fake{next(self._ids):06d}"


async def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI/Anthropic provider.")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--delay-ms", type=int, default=0, help="wait before each response head")
    parser.add_argument(
        "--chunk-delay-ms", type=int, default=0, help="wait between streamed chunks"
    )
    parser.add_argument("--api-key", help="require this key (Bearer / x-api-key)")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="the answer to every prompt")
    parser.add_argument("--quiet", action="store_true", help="no access line per request")
    args = parser.parse_args()
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s")  # one access line per request
    fake = FakeLLM(
        reply=args.reply,
        delay_s=args.delay_ms / 1000,
        chunk_delay_s=args.chunk_delay_ms / 1000,
        api_key=args.api_key,
    )
    await fake.start(args.port)
    print(f"fake LLM provider on {fake.url} (OpenAI /v1/..., Anthropic /v1/messages)", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
