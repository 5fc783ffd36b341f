"""Upstream error taxonomy and the single place where foreign exceptions are translated.

Every failure of the upstream client surfaces as an :class:`UpstreamError` subclass. ``kind``
is a stable, low-cardinality string meant to be used as a metrics label; ``response_started``
tells the proxy whether response headers were already handed out (then it can no longer
send a clean 502 to its client).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal

from httptools import HttpParserError, HttpParserUpgrade

Phase = Literal["connect", "read"]

__all__ = [
    "Phase",
    "RequestBodyFailed",
    "StaleConnection",
    "UpstreamClosed",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamSaturated",
    "UpstreamTLSError",
    "UpstreamTimeout",
    "translate_exception",
    "upstream_errors",
]


class UpstreamError(Exception):
    """Base class of all upstream failures."""

    kind: ClassVar[str] = "error"

    def __init__(self, message: str, *, response_started: bool = False) -> None:
        super().__init__(message)
        self.response_started = response_started


class UpstreamConnectError(UpstreamError):
    """The connection could not be established (refused, unreachable, DNS failure)."""

    kind: ClassVar[str] = "connect"


class UpstreamTLSError(UpstreamConnectError):
    """TLS handshake or certificate verification failed."""

    kind: ClassVar[str] = "tls"


class UpstreamTimeout(UpstreamError):
    """``phase="connect"``: TCP connect + TLS handshake took too long;
    ``phase="read"``: the upstream stayed silent for longer than the read timeout."""

    kind: ClassVar[str] = "timeout"

    def __init__(self, message: str, *, phase: Phase, response_started: bool = False) -> None:
        super().__init__(message, response_started=response_started)
        self.phase: Phase = phase


class UpstreamProtocolError(UpstreamError):
    """The upstream sent something that is not a valid (supported) HTTP/1.x response."""

    kind: ClassVar[str] = "protocol"


class UpstreamClosed(UpstreamError):
    """The peer closed or reset the connection before the response was complete."""

    kind: ClassVar[str] = "reset"


class UpstreamSaturated(UpstreamError):
    """No connection to the backend could be had within its limits (queue full, or
    waited ``pending_timeout`` for one). Nothing was sent."""

    kind: ClassVar[str] = "saturated"


class RequestBodyFailed(UpstreamError):
    """The request body to send could not be read (the client's side failed: it left,
    or a limit cut it off). Not the upstream's fault; the connection is closed."""

    kind: ClassVar[str] = "request_body"


class StaleConnection(UpstreamClosed):
    """A kept-alive connection turned out to be closed by the server before any byte of
    the response arrived (the keep-alive race): the request may not have been read at
    all. Safe to replay for idempotent methods; the caller decides."""

    kind: ClassVar[str] = "stale_connection"


def translate_exception(
    exc: BaseException, *, phase: Phase, response_started: bool = False
) -> UpstreamError:
    """Map a foreign exception to the matching :class:`UpstreamError` (most specific first).

    The original exception is attached as ``__cause__``. ``UpstreamError`` instances are
    returned unchanged.
    """
    if isinstance(exc, UpstreamError):
        return exc
    err: UpstreamError
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        # A TLS failure after the handshake is just a broken connection for the caller.
        if phase == "connect":
            err = UpstreamTLSError(f"TLS error: {exc}")
        else:
            err = UpstreamClosed(f"TLS error: {exc}", response_started=response_started)
    elif isinstance(exc, TimeoutError):  # before OSError: TimeoutError subclasses it
        err = UpstreamTimeout(f"{phase} timeout", phase=phase, response_started=response_started)
    elif isinstance(exc, HttpParserError | HttpParserUpgrade):
        err = UpstreamProtocolError(f"invalid response: {exc}", response_started=response_started)
    elif isinstance(exc, OSError):
        if phase == "connect":
            err = UpstreamConnectError(f"connect failed: {exc}")
        else:
            err = UpstreamClosed(f"connection lost: {exc!r}", response_started=response_started)
    else:
        err = UpstreamError(f"unexpected error: {exc!r}", response_started=response_started)
    err.__cause__ = exc
    return err


@contextmanager
def upstream_errors(phase: Phase) -> Iterator[None]:
    """Re-raise foreign I/O, TLS, parser and timeout errors as :class:`UpstreamError`.

    ``asyncio.CancelledError`` and programming errors pass through untouched.
    """
    try:
        yield
    except UpstreamError:
        raise
    except (OSError, ssl.SSLError, HttpParserError, HttpParserUpgrade) as exc:
        raise translate_exception(exc, phase=phase) from exc
