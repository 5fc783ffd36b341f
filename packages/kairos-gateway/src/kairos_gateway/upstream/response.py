"""The streamed response handed to the caller once the status line and headers are parsed."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from .errors import UpstreamClosed, UpstreamError


class UpstreamConnection(Protocol):
    """The connection a response reads from (`connection.UpstreamConnection`)."""

    loop: asyncio.AbstractEventLoop
    paused: bool

    def abort(self) -> None: ...
    def resume_reading(self) -> None: ...


__all__ = ["UpstreamResponse"]

# Below this many buffered bytes a paused connection starts reading again.
LOW_WATER = 64 * 1024


class UpstreamResponse:
    """An upstream response whose body arrives through :meth:`read`.

    ``headers`` keeps the received order and repeated fields, decoded as latin-1.
    The body has its transfer coding (chunked) removed; content codings (gzip...) are
    passed through untouched. The connection goes back to the pool as soon as the whole
    body has been received, even if it has not been read yet.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_conn",
        "_error",
        "_waiter",
        "headers",
        "reason",
        "status",
        "version",
    )

    def __init__(
        self,
        conn: UpstreamConnection,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        version: str,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.version = version
        self._conn: UpstreamConnection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} {self.reason!r} complete={self._complete}>"

    @property
    def complete(self) -> bool:
        """True once the whole body was received from upstream (it may still be buffered
        here, unread)."""
        return self._complete

    def read_nowait(self) -> bytes | None:
        """Next body chunk if one is buffered, ``b""`` at end of body, ``None`` if the caller
        has to ``await read()``. Raises the :class:`UpstreamError` that ended the body."""
        if self._chunks:
            return self._take()
        if self._error is not None:
            raise self._error
        if self._complete:
            return b""
        return None

    async def read(self) -> bytes:
        """Next body chunk, ``b""`` at end of body.

        Raises :class:`UpstreamError` (with ``response_started=True``) if the body could not
        be received completely: peer closed (``UpstreamClosed``), read timeout, invalid
        framing. Chunks received before the failure are returned first.
        """
        while True:
            if self._chunks:
                return self._take()
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            conn = self._conn
            assert conn is not None  # not complete and no error: still attached
            waiter: asyncio.Future[None] = conn.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def abort(self) -> None:
        """Give up on the response: buffered data is dropped and, unless the body was already
        fully received, the connection is closed (never reused). Idempotent."""
        self._chunks.clear()
        self._buffered = 0
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._set_error(
                UpstreamClosed("response aborted by the consumer", response_started=True)
            )
            conn.abort()

    # -- connection side ------------------------------------------------------------------

    def _take(self) -> bytes:
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        conn = self._conn
        if conn is not None and conn.paused and self._buffered <= LOW_WATER:
            conn.resume_reading()
        return chunk

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, chunk: bytes) -> int:
        """Buffer ``chunk``; return the number of buffered bytes (for backpressure)."""
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._waiter is not None:
            self._wake()
        return self._buffered

    def _finish(self) -> None:
        if self._error is None:
            self._complete = True
        self._conn = None
        if self._waiter is not None:
            self._wake()

    def _set_error(self, error: UpstreamError) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        self._conn = None
        if self._waiter is not None:
            self._wake()
