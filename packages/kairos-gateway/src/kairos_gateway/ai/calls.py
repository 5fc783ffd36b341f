"""One AI call as the ``ai`` plugin handles it: what it decided before the first try,
the target being tried, and helpers for what providers answer."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from kairos_core import UpstreamError, UpstreamTimeout
from kairos_core.ai import Target

from ..upstream import UpstreamError as UpstreamFailure
from ..upstream import UpstreamResponse
from ..upstream import UpstreamTimeout as UpstreamTimedOut
from .limits import Reservation
from .providers import Provider
from .state import TargetState
from .usage import Series

__all__ = ["Call", "Choice", "completion_texts", "read_all", "shown_consumer"]


@dataclass(slots=True)
class Choice:
    """One target, ready to call."""

    provider: Provider
    target: Target
    state: TargetState

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.target.model}"


@dataclass(slots=True)
class Call:
    """What one request has decided before the first try."""

    endpoint: str
    body: dict[str, Any]
    model: str  # as the client named it
    choices: list[Choice]
    consumer: str
    prompt_estimate: int
    stream: bool
    added_usage: bool  # the gateway asked for stream usage the client did not
    started: float
    reservation: Reservation | None = None
    series: Series | None = None


async def read_all(response: UpstreamResponse, limit: int, label: str) -> bytes:
    """The whole body (at most ``limit`` bytes); the response is aborted on any
    failure, cancellation included, so its connection is never left checked out."""
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := await response.read():
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"{label}'s answer is larger than {limit} bytes")
            parts.append(chunk)
    except UpstreamTimedOut:
        response.abort()
        raise UpstreamTimeout(f"{label} stopped sending its answer") from None
    except UpstreamFailure:
        response.abort()
        raise UpstreamError(f"{label}'s answer broke off") from None
    except BaseException:
        response.abort()
        raise
    return b"".join(parts)


#: Header names whose values are credentials: never shown as a consumer's name.
_SECRET_HEADER: Final = re.compile(r"key|token|auth|secret|cookie|session|password", re.I)


def shown_consumer(consumer: str, key: str) -> str:
    """A consumer as metrics and usage show it: a header-keyed consumer whose header
    carries a credential (``X-Api-Key``, ``Authorization``) is shown by a digest of the
    value, never the value."""
    if key.startswith("header:") and _SECRET_HEADER.search(key) and consumer.startswith("header:"):
        digest = hashlib.blake2b(consumer.encode(), digest_size=6).hexdigest()
        return f"header:#{digest}"
    return consumer


def completion_texts(document: Any) -> list[str]:
    texts: list[str] = []
    if not isinstance(document, dict):
        return texts
    for choice in document.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            texts.append(message["content"])
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    return texts
