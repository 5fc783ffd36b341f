"""Serialisation of the request head, with the validation that makes injection impossible."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

__all__ = ["BodySource", "build_request", "build_streamed_head"]


class BodySource(Protocol):
    """A request body sent after the head, as it arrives (`kairos_gateway.body`)."""

    #: Bytes in all (sent with Content-Length), or None: unknown (sent chunked).
    length: int | None

    async def read(self) -> bytes:
        """The next chunk, ``b""`` at the end; raises if the body cannot be had whole."""
        ...


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Any visible byte (latin-1 maps str code points 0-255 to bytes one to one); no space or CTL.
_TARGET = re.compile(r"[\x21-\x7e\x80-\xff]+")

_PLAIN, _FRAMING, _CONNECTION = 0, 1, 2
# Validated header names -> kind. Names repeat across requests, so the regex and lower()
# run once per distinct name; the cap keeps attacker-chosen names from growing it forever.
_name_kinds: dict[str, int] = {}
_NAME_CACHE_MAX = 4096

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _classify(name: str) -> int:
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid header name {name!r}")
    lname = name.lower()
    if lname in ("content-length", "transfer-encoding"):
        kind = _FRAMING
    elif lname == "connection":
        kind = _CONNECTION
    else:
        kind = _PLAIN
    if len(_name_kinds) < _NAME_CACHE_MAX:
        _name_kinds[name] = kind
    return kind


def _find_bad_value(headers: Sequence[tuple[str, str]]) -> ValueError:
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            return ValueError(f"invalid value for header {name!r}: contains CR, LF or NUL")
    return ValueError("invalid request head")  # pragma: no cover - counts cannot differ


def build_request(
    method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
) -> tuple[bytes, bool]:
    """Return ``(bytes to write, request asked for Connection: close)``.

    The target is written exactly as given. Caller-supplied ``Content-Length`` and
    ``Transfer-Encoding`` headers are dropped: the body framing is owned by the client,
    which adds ``Content-Length`` for a non-empty body (and ``0`` for an empty
    POST/PUT/PATCH). Raises ``ValueError`` for a method that is not a token, a target with
    a space or control character, a header name that is not a token, a header value with
    CR, LF or NUL, or any character outside latin-1.
    """
    framing = f"Content-Length: {len(body)}\r\n" if body or method in _BODY_METHODS else None
    raw, close = _head(method, target, headers, framing)
    return (raw + body if body else raw), close


def build_streamed_head(
    method: str, target: str, headers: Sequence[tuple[str, str]], length: int | None
) -> tuple[bytes, bool]:
    """Like `build_request`, for a body sent after the head: ``Content-Length: length``,
    or ``Transfer-Encoding: chunked`` when the length is not known (None)."""
    framing = (
        "Transfer-Encoding: chunked\r\n" if length is None else f"Content-Length: {length}\r\n"
    )
    return _head(method, target, headers, framing)


def _head(
    method: str, target: str, headers: Sequence[tuple[str, str]], framing: str | None
) -> tuple[bytes, bool]:
    if _TOKEN.fullmatch(method) is None:
        raise ValueError(f"invalid method {method!r}")
    if _TARGET.fullmatch(target) is None:
        raise ValueError(f"invalid request target {target!r}")
    parts = [method, " ", target, " HTTP/1.1\r\n"]
    lines = 2  # request line + the empty line ending the head
    close = False
    kinds = _name_kinds
    for name, value in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _classify(name)
        if kind:
            if kind == _FRAMING:
                continue
            if "close" in value.lower():
                close = True
        parts.append(f"{name}: {value}\r\n")
        lines += 1
    if framing is not None:
        parts.append(framing)
        lines += 1
    parts.append("\r\n")
    head = "".join(parts)
    # Names and target are validated above, so any extra CR/LF/NUL came from a value:
    # three C-speed scans instead of one per value.
    if head.count("\n") != lines or head.count("\r") != lines or "\0" in head:
        raise _find_bad_value(headers)
    try:
        raw = head.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"request head is not latin-1 encodable: {exc}") from exc
    return raw, close
