"""OpenAI chat shape <-> Anthropic Messages API.

`to_messages` turns a chat-completions request into a Messages request (system
messages into ``system``, tool definitions, tool calls and tool results into content
blocks, ``stop`` into ``stop_sequences``); `from_message` turns the answer back;
`StreamTranslator` turns Anthropic's event stream into chat-completion chunks as it
arrives, one event in, zero or more chunks out; `error_body` gives an Anthropic error
the OpenAI error shape. Fields with no counterpart are dropped (``n``, ``logprobs``,
``presence_penalty``, ...); ``n`` other than 1 is refused.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from kairos_core import BadRequest

__all__ = ["StreamTranslator", "error_body", "from_message", "to_messages"]

_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
_ERROR_TYPES: Final = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "server_error",
    "api_error": "server_error",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            url = part.get("image_url", {})
            url = url.get("url", "") if isinstance(url, dict) else str(url)
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                source = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
    return blocks


def _tool_call_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function", {}) if isinstance(call, dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise BadRequest("a tool call's arguments are not JSON") from None
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": arguments,
            }
        )
    return blocks


def to_messages(body: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """A Messages API request for the chat-completions request ``body``."""
    if body.get("n", 1) != 1:
        raise BadRequest("n other than 1 is not supported by this model's provider")
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants alternating roles: merge consecutive messages of one role.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            raise BadRequest("each of messages must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
        elif role == "user":
            add("user", _blocks(message.get("content")))
        elif role == "assistant":
            add("assistant", _tool_call_blocks(message))
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": str(message.get("tool_call_id", "")),
                        "content": _text(message.get("content")),
                    }
                ],
            )
        else:
            raise BadRequest(f"unknown message role {role!r}")
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or default_max_tokens,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p", "stream"):
        if name in body:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        choice = body.get("tool_choice")
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif choice == "none":
            out["tool_choice"] = {"type": "none"}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            out["tool_choice"] = {"type": "tool", "name": choice["function"].get("name", "")}
    return out


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def from_message(message: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat completion for a Messages API answer (``model``: the one asked for,
    when the answer does not name the model that answered)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": json.dumps(block.get("input", {}), separators=(",", ":")),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        reply["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": message.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": _FINISH.get(message.get("stop_reason") or "", "stop"),
            }
        ],
    }
    usage = message.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("input_tokens"), int):
        out["usage"] = _usage(usage["input_tokens"], int(usage.get("output_tokens") or 0))
    return out


def error_body(document: Any, status: int) -> dict[str, Any]:
    """An Anthropic error document in the OpenAI error shape."""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        error = {}
    kind = str(error.get("type", "api_error"))
    return {
        "error": {
            "message": str(error.get("message", f"the provider answered {status}")),
            "type": _ERROR_TYPES.get(kind, "server_error"),
            "param": None,
            "code": kind,
        }
    }


class StreamTranslator:
    """Anthropic stream events in, chat-completion chunks (as JSON strings) out.

    Usage arrives in ``message_start`` (prompt) and ``message_delta`` (completion); it
    is kept in `usage` and, with ``include_usage``, sent as the last chunk, as OpenAI
    does.
    """

    __slots__ = (
        "_blocks",
        "_created",
        "_id",
        "_model",
        "completion",
        "include_usage",
        "prompt",
        "seen_usage",
    )

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self._model = model
        self._id = "chatcmpl-"
        self._created = int(time.time())
        #: Anthropic content-block index -> OpenAI tool-call index (tool_use blocks).
        self._blocks: dict[int, int] = {}
        self.include_usage = include_usage
        self.prompt = 0
        self.completion = 0
        self.seen_usage = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            },
            separators=(",", ":"),
        )

    def feed(self, event: str, data: str) -> list[str]:
        """Chunks for one event; ``[DONE]`` after ``message_stop``. Raises `ValueError`
        for data that is not JSON, and `ProviderStreamError` for an ``error`` event."""
        if event == "ping":
            return []
        document = json.loads(data)
        kind = document.get("type", event)
        if kind == "message_start":
            message = document.get("message", {})
            self._id = "chatcmpl-" + str(message.get("id", ""))
            self._model = str(message.get("model") or self._model)
            usage = message.get("usage") or {}
            if isinstance(usage.get("input_tokens"), int):
                self.prompt = usage["input_tokens"]
                self.seen_usage = True
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = document.get("content_block", {})
            if block.get("type") == "tool_use":
                index = self._blocks[document.get("index", 0)] = len(self._blocks)
                call = {
                    "index": index,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = document.get("delta", {})
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self._blocks.get(document.get("index", 0), 0)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            usage = document.get("usage") or {}
            if isinstance(usage.get("output_tokens"), int):
                self.completion = usage["output_tokens"]
                self.seen_usage = True
            reason = (document.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, _FINISH.get(reason or "", "stop"))]
        if kind == "message_stop":
            out = []
            if self.include_usage:
                out.append(
                    json.dumps(
                        {
                            "id": self._id,
                            "object": "chat.completion.chunk",
                            "created": self._created,
                            "model": self._model,
                            "choices": [],
                            "usage": _usage(self.prompt, self.completion),
                        },
                        separators=(",", ":"),
                    )
                )
            out.append("[DONE]")
            return out
        if kind == "error":
            raise ProviderStreamError(json.dumps(error_body(document, 500), separators=(",", ":")))
        return []


class ProviderStreamError(Exception):
    """The provider reported an error inside its stream; ``args[0]`` is the OpenAI-shaped
    error document to pass on."""
