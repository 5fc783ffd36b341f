"""A request body on its way through the gateway: read from the client while it is
written upstream, never held whole.

The exchange feeds `RequestBody` the chunks Tornado reads from the client; the upstream
connection reads them and writes them to the backend. Two bounds keep a request's
memory small whatever the body's size:

- ``buffer_size``: bytes received but not yet taken upstream. Past it, `feed` returns a
  future that the exchange hands back to Tornado, which stops reading the client's
  socket until the upstream side has taken enough (a slow backend slows the client,
  not the gateway's memory).
- ``replay_size``: bytes already sent upstream that are kept so the request can be sent
  again (a retry, a stale keep-alive connection). Once the body has grown past it, the
  kept bytes go and `rewind` says no: the first failure is final.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["DEFAULT_BUFFER_SIZE", "DEFAULT_REPLAY_SIZE", "BodyFailed", "RequestBody"]

#: Bytes per request read from the client ahead of the backend.
DEFAULT_BUFFER_SIZE = 64 * 1024
#: Bytes per request kept for a replay.
DEFAULT_REPLAY_SIZE = 64 * 1024


class BodyFailed(Exception):
    """The client's body did not arrive whole (the client left, a limit cut it off)."""


class RequestBody:
    """The streamed body of one request (see the module docstring)."""

    __slots__ = (
        "_buffer_size",
        "_ended",
        "_error",
        "_kept",
        "_pending",
        "_read_waiter",
        "_received",
        "_replay_size",
        "_sent",
        "_unread",
        "_writable",
        "length",
    )

    def __init__(
        self,
        length: int | None,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        replay_size: int = DEFAULT_REPLAY_SIZE,
    ) -> None:
        #: The body's length when the client said it (Content-Length); None: chunked.
        self.length = length
        self._buffer_size = buffer_size
        self._replay_size = replay_size
        self._pending: deque[bytes] = deque()
        self._unread = 0
        #: Chunks already read, kept for a replay while the body fits ``replay_size``.
        self._kept: list[bytes] | None = []
        self._received = 0
        self._sent = 0
        self._ended = False
        self._error: BaseException | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<RequestBody received={self._received} unread={self._unread} "
            f"ended={self._ended} replayable={self.replayable}>"
        )

    # -- the client side (the exchange) --------------------------------------------

    @property
    def received(self) -> int:
        return self._received

    def feed(self, chunk: bytes) -> asyncio.Future[None] | None:
        """Take ``chunk`` from the client; a future to wait on when the buffer is full."""
        if self._error is not None or self._ended:
            return None
        self._pending.append(chunk)
        self._unread += len(chunk)
        self._received += len(chunk)
        if self._kept is not None and self._received > self._replay_size:
            self._kept = None  # too big to replay: what was sent is gone for good
        self._wake_reader()
        if self._unread < self._buffer_size:
            return None
        writable = self._writable
        if writable is None or writable.done():
            writable = self._writable = asyncio.get_running_loop().create_future()
        return writable

    def end(self) -> None:
        """The client sent the whole body."""
        self._ended = True
        self._wake_reader()

    def fail(self, error: BaseException) -> None:
        """The body will not arrive whole: a reader gets ``error`` (as `BodyFailed`)."""
        if self._error is None and not self._ended:
            self._error = error
        self._pending.clear()
        self._unread = 0
        self._kept = None
        self._wake_reader()
        self._release_client()

    # -- the upstream side ----------------------------------------------------------

    @property
    def replayable(self) -> bool:
        """Could the body be sent again from its first byte?"""
        return self._sent == 0 or self._kept is not None

    async def read(self) -> bytes:
        """The next chunk to send upstream, ``b""`` at the end; raises `BodyFailed`."""
        while True:
            if self._pending:
                chunk = self._pending.popleft()
                self._unread -= len(chunk)
                self._sent += len(chunk)
                kept = self._kept
                if kept is not None:
                    kept.append(chunk)
                if self._unread < self._buffer_size:
                    self._release_client()
                return chunk
            error = self._error
            if error is not None:
                raise BodyFailed(str(error) or type(error).__name__) from error
            if self._ended:
                return b""
            waiter = self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                # A cancelled reader (a try given up) must not unset its successor's.
                if self._read_waiter is waiter:
                    self._read_waiter = None

    async def whole_if_small(self) -> bytes | None:
        """Wait until the body has ended or filled the buffer; the whole body if it
        ended (it is then taken from here), else None: it streams.

        For a chunked body: one that turns out small is sent with a Content-Length,
        as it was received whole, rather than chunked."""
        while not self._ended and self._unread < self._buffer_size:
            if self._error is not None:
                raise BodyFailed(str(self._error)) from self._error
            waiter = self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._read_waiter is waiter:
                    self._read_waiter = None
        if not self._ended or self._sent:
            return None
        whole = b"".join(self._pending)
        self._pending.clear()
        self._unread = 0
        self._kept = None
        return whole

    def rewind(self) -> bool:
        """Start over from the first byte, for another try; False when the bytes
        already sent are no longer kept (nothing changes then)."""
        if self._sent == 0:
            return True
        kept = self._kept
        if kept is None or self._error is not None:
            return False
        self._pending.extendleft(reversed(kept))
        self._unread += self._sent
        self._sent = 0
        kept.clear()
        return True

    # -- internals ------------------------------------------------------------------

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release_client(self) -> None:
        writable = self._writable
        if writable is not None:
            self._writable = None
            if not writable.done():
                writable.set_result(None)
