"""Requests and responses of the management API, independent of Tornado."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kairos_core import KairosError
from tornado.httputil import HTTPHeaders

from .. import problems

#: Largest request body the management API accepts (413 beyond).
MAX_API_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str  # raw, still percent-encoded
    query: str
    headers: HTTPHeaders
    body: bytes
    peer_ip: str
    request_id: str


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
        return cls(status, body, [("Content-Type", "application/json"), *(headers or [])])

    @classmethod
    def problem(cls, error: KairosError, request_id: str) -> ApiResponse:
        status, headers, body = problems.render(error, request_id)
        return cls(status, body, [("Content-Type", problems.CONTENT_TYPE), *headers])
