"""Token counts: what a provider reports, and an offline estimate when it reports none.

The estimate needs no download and no tokenizer data: text is cut into pieces the way
BPE tokenizers pre-split it (letter runs, digit groups of up to three, single
punctuation marks); a letter run costs one token per six characters begun, a run of
non-ASCII letters one per character (CJK text is about one token per character), and
each chat message adds three (OpenAI's documented per-message overhead), plus three
for the reply's priming. Against OpenAI's cl100k/o200k counts on English prose it is
within about 15 %; it is only used for limits checked before a call and for usage a
provider did not report, and is always labelled ``estimated``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Final

__all__ = [
    "Usage",
    "estimate_text",
    "prompt_texts",
    "prompt_tokens",
    "usage_of",
]

_PIECE: Final = re.compile(r"[^\W\d_]+|\d{1,3}|[^\w\s]|_")
_PER_MESSAGE: Final = 3
_PRIMING: Final = 3


def estimate_text(text: str) -> int:
    tokens = 0
    for piece in _PIECE.findall(text):
        if piece.isascii():
            tokens += math.ceil(len(piece) / 6)
        elif piece[0].isalpha():
            tokens += len(piece)
        else:
            tokens += 1
    return tokens


def _content_texts(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]
            elif isinstance(part, str):
                yield part


def prompt_texts(endpoint: str, body: dict[str, Any], *, roles: bool = False) -> Iterator[str]:
    """The prompt's text pieces: every message's text (``roles``: not the assistant's,
    for guards), a completion's prompt, an embedding's input."""
    if endpoint == "chat":
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            if roles and message.get("role") == "assistant":
                continue
            yield from _content_texts(message.get("content"))
    elif endpoint == "completions":
        yield from _content_texts(body.get("prompt"))
    elif endpoint == "embeddings":
        yield from _content_texts(body.get("input"))


def prompt_tokens(endpoint: str, body: dict[str, Any]) -> int:
    """The estimated prompt size of a request."""
    total = sum(estimate_text(text) for text in prompt_texts(endpoint, body))
    if endpoint == "chat":
        messages = body.get("messages")
        total += _PER_MESSAGE * (len(messages) if isinstance(messages, list) else 0) + _PRIMING
    elif endpoint == "embeddings":
        data = body.get("input")
        if isinstance(data, list) and data and isinstance(data[0], int):
            total += len(data)  # already tokens
    return total


class Usage:
    """Tokens of one call; ``estimated`` when any part is the gateway's estimate."""

    __slots__ = ("completion", "estimated", "prompt")

    def __init__(self, prompt: int, completion: int, *, estimated: bool) -> None:
        self.prompt = prompt
        self.completion = completion
        self.estimated = estimated

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def usage_of(document: Any) -> tuple[int, int] | None:
    """``(prompt, completion)`` from an OpenAI-shaped ``usage`` member, if present."""
    if not isinstance(document, dict):
        return None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return max(prompt, 0), max(completion or 0, 0)
