"""Buffered requests and whole responses: what the gateway's own endpoints take and
give (the management API, `/health` and friends) and what a policy answers with; and
`StreamedResponse`, an answer written as it is produced (a policy's LLM stream,
`GET /api/events`).

A leaf module: it knows nothing of the exchange, the management API or the app, so
each of them can depend on it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from kairos_core import BadRequest, ConfigError, KairosError
from pydantic import BaseModel
from tornado.httputil import HTTPHeaders

from . import problems

__all__ = [
    "MAX_API_BODY",
    "ApiRequest",
    "ApiResponse",
    "OpsHandler",
    "Response",
    "StreamedResponse",
    "UnsupportedMediaType",
    "reason_phrase",
]

_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    """The reason phrase of ``status`` ("" for a code without one)."""
    return _PHRASES.get(status, "")


#: Largest request body the management API accepts (413 beyond).
MAX_API_BODY = 1024 * 1024
JSON = "application/json"


class UnsupportedMediaType(KairosError):
    status = 415
    type = "unsupported_media_type"
    title = "Unsupported media type"

    def headers(self) -> list[tuple[str, str]]:
        return [("Accept", "application/json")]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str  # raw, still percent-encoded
    query: str
    headers: HTTPHeaders
    body: bytes
    peer_ip: str
    request_id: str

    def json(self) -> object:
        """The body as JSON: 415 unless it is declared JSON, 400 when it does not parse."""
        media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != JSON and not (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            raise UnsupportedMediaType(
                f"send the body as {JSON} (got {media_type or 'no Content-Type'})"
            )
        try:
            return json.loads(self.body.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the body is not UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise BadRequest(
                f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None

    def query_params(self) -> dict[str, str]:
        """Query parameters; the last value wins when one is repeated."""
        return {k: v[-1] for k, v in parse_qs(self.query, keep_blank_values=True).items()}


@dataclass(slots=True)
class ApiResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(
        cls, status: int, payload: object, headers: list[tuple[str, str]] | None = None
    ) -> ApiResponse:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, body, [("Content-Type", JSON), *(headers or [])])

    @classmethod
    def model(
        cls,
        status: int,
        payload: BaseModel,
        headers: list[tuple[str, str]] | None = None,
        *,
        exclude_none: bool = False,
    ) -> ApiResponse:
        """A response built from one of the models the OpenAPI document describes
        (config models with ``exclude_none``, as the config file has them)."""
        body = payload.model_dump_json(exclude_none=exclude_none).encode()
        return cls(status, body, [("Content-Type", JSON), *(headers or [])])

    @classmethod
    def problem(cls, error: KairosError, request_id: str) -> ApiResponse:
        status, headers, body = problems.render(error, request_id)
        if isinstance(error, ConfigError):
            # Validation failures carry their field paths (RFC 9457 extension member).
            document = json.loads(body)
            document["errors"] = [e.as_dict() for e in error.errors]
            body = json.dumps(document, separators=(",", ":")).encode()
        return cls(status, body, [("Content-Type", problems.CONTENT_TYPE), *headers])


#: A whole response of the gateway's own (a policy's early answer, for one).
Response = ApiResponse


@dataclass(slots=True)
class StreamedResponse:
    """An answer whose body is produced over time (server-sent events: a provider's
    stream relayed by a policy, the management API's event stream), written as it comes,
    chunked, with flow control.

    ``body`` is closed (``aclose``, when it has one) and ``close`` called however the
    exchange ends, the client leaving included, so a generator can release what it
    holds in a ``finally``. An exception it raises once the head is out cuts the
    connection: the client sees the response incomplete.
    """

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    close: Callable[[], None] | None = None
    #: Held open by design (an event stream): not counted among requests in flight.
    held: bool = False


#: A gateway endpoint (`/health`, ...): takes the request, returns status, content
#: type and body; may raise a `KairosError` (rendered as a problem).
OpsHandler = Callable[[ApiRequest], tuple[int, str, bytes]]
