"""RFC 9457 problem details: the one place errors become HTTP responses.

Every error body the gateway produces (no route, upstream failures, bad requests) goes
through `render`, so they all carry the same fields and a `request_id`. The `detail`
is written for the client; internal causes go to the log only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kairos_core import KairosError

CONTENT_TYPE = "application/problem+json"


def render(
    exc: KairosError, request_id: str, trace_id: str | None = None
) -> tuple[int, Sequence[tuple[str, str]], bytes]:
    """Status, extra headers and body for `exc` (with the request's ``trace_id`` when
    it has one: the trace to look up)."""
    body: dict[str, object] = {
        "type": exc.type,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "request_id": request_id,
        **exc.extensions(),
    }
    if trace_id is not None:
        body["trace_id"] = trace_id
    return exc.status, exc.headers(), json.dumps(body, separators=(",", ":")).encode()
