"""The request body limit (``max_body_size``, top level or per route)."""

from __future__ import annotations

from ..chain import Policy, Request

__all__ = ["BodyLimit"]


class BodyLimit(Policy):
    """413 before the body is read when Content-Length is over the limit; a chunked
    body is cut off with 413 as soon as it grows past it (the exchange counts)."""

    name = "body_limit"
    priority = 1900

    __slots__ = ("max_bytes",)

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def on_headers(self, request: Request) -> None:
        request.limit_body(self.max_bytes)
