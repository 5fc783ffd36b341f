"""A provider's streamed answer relayed to the client, event by event.

`StreamRelay` is the body of the `StreamedResponse` the ``ai`` plugin answers with. An
OpenAI-compatible provider's events go to the client as received; only an event that
may carry usage is parsed (the usage chunk the gateway asked for on the client's behalf
is dropped). An Anthropic stream is translated into chat-completion chunks. When the
relay ends, however it ends (the stream done, the provider breaking off, the client
leaving, or the answer never written at all), ``done`` is awaited once with what the
stream carried, for the accounting.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter

from ..upstream import UpstreamResponse
from . import anthropic, sse
from .tokens import usage_of

__all__ = ["Relayed", "StreamRelay"]


@dataclass(frozen=True, slots=True)
class Relayed:
    """What a relayed stream carried."""

    prompt: int
    completion: int
    #: The provider reported no usage: the counts are the gateway's estimate.
    estimated: bool
    #: When the first chunk went to the client (None: none did).
    first_byte: float | None
    #: The stream reached its end (False: broken off, or the client left).
    whole: bool


class StreamRelay:
    """An async iterator of the bytes to send; ``translate`` names the model for an
    Anthropic stream (None: OpenAI-compatible, relayed as received)."""

    __slots__ = ("_added_usage", "_done", "_estimate", "_events", "_response", "_started")

    def __init__(
        self,
        response: UpstreamResponse,
        *,
        translate: str | None,
        added_usage: bool,
        prompt_estimate: int,
        done: Callable[[Relayed], Awaitable[None]],
    ) -> None:
        self._response = response
        self._added_usage = added_usage
        self._estimate = prompt_estimate
        self._done = done
        self._started = False
        self._events = self._relay(translate)

    def __aiter__(self) -> StreamRelay:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        return await anext(self._events)

    async def aclose(self) -> None:
        if not self._started:
            # Never iterated (the response was refused, or the client left first): an
            # async generator never started runs none of its ``finally``.
            self._started = True
            self._response.abort()
            await self._done(Relayed(self._estimate, 0, True, None, whole=False))
        await self._events.aclose()

    async def _relay(self, translate: str | None) -> AsyncGenerator[bytes, None]:
        response = self._response
        reader = sse.SseReader()
        translator = (
            None
            if translate is None
            else anthropic.StreamTranslator(translate, include_usage=not self._added_usage)
        )
        prompt = completion = 0
        counted = False
        events = 0  # chunks relayed, for the estimate when no usage comes
        first_byte: float | None = None
        whole = False
        try:
            while True:
                chunk = await response.read()
                out: list[bytes] = []
                for event in reader.feed(chunk) if chunk else reader.finish():
                    if translator is not None:
                        try:
                            pieces = translator.feed(event.event, event.data)
                        except anthropic.ProviderStreamError as exc:
                            out.append(sse.encode(exc.args[0]))
                            break
                        except ValueError:
                            continue
                        events += len(pieces)
                        out += [sse.encode(piece) for piece in pieces]
                        continue
                    data = event.data
                    if '"usage"' in data:
                        try:
                            document = json.loads(data)
                        except ValueError:
                            document = None
                        found = usage_of(document)
                        if found is not None:
                            (prompt, completion), counted = found, True
                            if self._added_usage and not document.get("choices"):
                                continue  # the client did not ask for the usage chunk
                    events += 1
                    out.append(event.raw or sse.encode(data))
                if out:
                    if first_byte is None:
                        first_byte = perf_counter()
                    yield b"".join(out)
                if not chunk:
                    break
            whole = True
        finally:
            if not whole:
                response.abort()
            if translator is not None and translator.seen_usage:
                prompt, completion, counted = translator.prompt, translator.completion, True
            if not counted:
                # One token per chunk, less the role chunk, the finish chunk and [DONE]:
                # OpenAI-compatible servers stream about a token per chunk.
                prompt, completion = self._estimate, max(0, events - 3)
            await self._done(Relayed(prompt, completion, not counted, first_byte, whole))
