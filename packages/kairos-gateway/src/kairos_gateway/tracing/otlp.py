"""OTLP/HTTP export of finished spans: the protobuf encoding and the POST.

`encode` writes an ``ExportTraceServiceRequest`` (opentelemetry-proto's
``collector/trace/v1``) for a batch of the SDK's `ReadableSpan`s byte by byte: the
gateway's spans have a fixed shape (string, integer, boolean and float attributes,
exception events, a status), and writing it directly costs a fraction of building the
generic message objects (the SDK's encoder spends about 40 us per span on that, more
than the request it describes). `tests/gateway/test_tracing_otel.py` decodes what the
gateway sends with opentelemetry-proto.

`OtlpHttpExporter` is the SDK `SpanExporter` the `BatchSpanProcessor` calls from its own
thread: one POST per batch, ``application/x-protobuf``, the configured headers.
"""

from __future__ import annotations

import logging
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from http.client import HTTPException
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["OtlpHttpExporter", "encode", "encode_attributes"]

log = logging.getLogger("kairos.gateway")

_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_INT64 = 0xFFFFFFFFFFFFFFFF
#: Span.flags: the sampled bit and "the parent's is-remote flag is known" (bit 8),
#: plus bit 9 when the parent is remote.
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x101)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x301)
_KEYS: dict[str, bytes] = {}
#: Encoded ``KeyValue`` messages of attributes whose values repeat (method, route,
#: addresses, statuses...): most of a span's attributes are one lookup. Bounded; the
#: attributes that differ per request are never kept.
_PAIRS: dict[tuple[bytes, str, object, type], bytes] = {}
_MAX_PAIRS = 4096
_UNIQUE = frozenset({"url.path", "url.full", "kairos.request_id", "user_agent.original"})
_SCALARS = frozenset({str, int, bool, float})


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _key(name: str) -> bytes:
    """``KeyValue.key`` of ``name`` (the few attribute names are encoded once)."""
    encoded = _KEYS.get(name)
    if encoded is None:
        encoded = _KEYS[name] = _field(b"\x0a", name.encode())
    return encoded


def _value(value: Any) -> bytes:
    """An ``AnyValue``."""
    kind = value.__class__
    if kind is str:
        return _field(b"\x0a", value.encode("utf-8", "replace"))
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        return b"\x18" + _varint(value & _INT64)
    if kind is float:
        return b"\x21" + _DOUBLE.pack(value)
    return _field(b"\x0a", str(value).encode("utf-8", "replace"))


def _pair(name: str, value: Any) -> bytes:
    """A ``KeyValue`` message."""
    return _key(name) + _field(b"\x12", _value(value))


def encode_attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` fields under ``tag``."""
    if not attributes:
        return b""
    parts = []
    pairs = _PAIRS
    for name, value in attributes.items():
        kind = value.__class__
        if name in _UNIQUE or kind not in _SCALARS:
            parts.append(_field(tag, _pair(name, value)))
            continue
        cached = (tag, name, value, kind)
        encoded = pairs.get(cached)
        if encoded is None:
            encoded = _field(tag, _pair(name, value))
            if len(pairs) < _MAX_PAIRS:
                pairs[cached] = encoded
        parts.append(encoded)
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:
    context = span.context
    assert context is not None
    parent = span.parent
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if parent is not None:
        parts += [b"\x22\x08", parent.span_id.to_bytes(8, "big")]
    parts += [
        _field(b"\x2a", span.name.encode("utf-8", "replace")),
        b"\x30",
        _varint(span.kind.value + 1),  # the API's INTERNAL is 0, OTLP's is 1
        b"\x39",
        _FIXED64.pack(span.start_time or 0),
        b"\x41",
        _FIXED64.pack(span.end_time or 0),
        encode_attributes(b"\x4a", span.attributes),
    ]
    for event in span.events:
        body = (
            b"\x09"
            + _FIXED64.pack(event.timestamp)
            + _field(b"\x12", event.name.encode())
            + encode_attributes(b"\x1a", event.attributes)
        )
        parts.append(_field(b"\x5a", body))
    status = span.status
    code = status.status_code.value  # UNSET 0, OK 1, ERROR 2: as OTLP numbers them
    if code:
        body = b"\x18" + _varint(code)
        if status.description:
            body = _field(b"\x12", status.description.encode("utf-8", "replace")) + body
        parts.append(_field(b"\x7a", body))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def encode(spans: Iterable[ReadableSpan], resource: bytes, scope: bytes) -> bytes:
    """An ``ExportTraceServiceRequest`` of ``spans``, all of one resource and scope
    (given encoded: `encode_attributes` of the resource, the scope message)."""
    body = b"".join(_field(b"\x12", _span(span)) for span in spans)
    scope_spans = _field(b"\x0a", scope) + body
    resource_spans = _field(b"\x0a", resource) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)


class OtlpHttpExporter(SpanExporter):
    """POSTs each batch to an OTLP/HTTP traces endpoint (protobuf)."""

    def __init__(
        self,
        endpoint: str,
        *,
        resource: Mapping[str, Any],
        scope: tuple[str, str],
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> None:
        self._endpoint = endpoint
        self._resource = encode_attributes(b"\x0a", resource)
        self._scope = _field(b"\x0a", scope[0].encode()) + _field(b"\x12", scope[1].encode())
        self._headers = {"Content-Type": "application/x-protobuf", **headers}
        self._timeout_s = timeout_s
        self._failing_since = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = encode(spans, self._resource, self._scope)
        request = urllib.request.Request(  # noqa: S310 (the configured http(s) endpoint)
            self._endpoint, data=data, headers=self._headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                response.read()
        except (OSError, HTTPException, ValueError) as exc:
            self._failed(len(spans), exc)
            return SpanExportResult.FAILURE
        if self._failing_since:
            self._failing_since = 0.0
            log.info("span export works again", extra={"fields": {"endpoint": self._endpoint}})
        return SpanExportResult.SUCCESS

    def _failed(self, count: int, exc: BaseException) -> None:
        """Log the first failure of a streak, then once a minute."""
        now = time.monotonic()
        if self._failing_since and now - self._failing_since < 60:
            return
        self._failing_since = now
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
        log.warning(
            "span export failed; spans dropped",
            extra={"fields": {"endpoint": self._endpoint, "spans": count, "error": reason}},
        )

    def shutdown(self) -> None:
        return None
