"""The OTLP protobuf of the gateway's spans, written byte by byte.

An ``ExportTraceServiceRequest`` (opentelemetry-proto's ``collector/trace/v1``) is one
resource, one scope and a list of spans. The gateway's spans have a fixed shape (string,
integer, boolean and float attributes, exception events, a status), so each is written
directly: `span` frames one span as an element of ``ScopeSpans.spans`` from parts the
caller encodes with `name_kind`, `attributes`, `string_attribute`, `event` and
`status`, and `export_request` wraps a batch of them. Writing the bytes directly costs
a fraction of building the generic message objects (the SDK's encoder spends about
40 us per span on that, more than the request it describes), and parts that repeat
from span to span (a route's name and attributes) can be encoded once by the caller.
`tests/gateway/test_tracing_otel.py` decodes what the gateway sends with
opentelemetry-proto.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CLIENT",
    "EVENT_ATTRIBUTE",
    "RESOURCE_ATTRIBUTE",
    "SERVER",
    "SPAN_ATTRIBUTE",
    "attributes",
    "event",
    "export_request",
    "key",
    "name_kind",
    "scope",
    "span",
    "status",
    "string_attribute",
]

#: ``Span.kind`` as OTLP numbers it.
SERVER = 2
CLIENT = 3
#: ``Span.attributes`` is field 9, ``Event.attributes`` field 3, ``Resource.attributes``
#: field 1: the tag of each repeated ``KeyValue``.
SPAN_ATTRIBUTE = b"\x4a"
EVENT_ATTRIBUTE = b"\x1a"
RESOURCE_ATTRIBUTE = b"\x0a"
#: Span.start_time_unix_nano and end_time_unix_nano (fixed64 fields 7 and 8).
_TIMES = struct.Struct("<BQBQ")
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_INT64 = 0xFFFFFFFFFFFFFFFF
#: Span.flags: the sampled bit and "the parent's is-remote flag is known" (bit 8),
#: plus bit 9 when the parent is remote.
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x101)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x301)
#: A varint of one byte for each length below 128 (most fields here).
_SHORT = [bytes((n,)) for n in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SHORT[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def key(name: str) -> bytes:
    """``KeyValue.key`` of an attribute called ``name``."""
    return _field(b"\x0a", name.encode())


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


def attributes(values: Mapping[str, Any] | None, tag: bytes = SPAN_ATTRIBUTE) -> bytes:
    """Repeated ``KeyValue`` fields under ``tag`` (a span's attributes by default)."""
    if not values:
        return b""
    return b"".join(
        _field(tag, key(name) + _field(b"\x12", _value(value))) for name, value in values.items()
    )


def string_attribute(encoded_key: bytes, value: str) -> bytes:
    """One span attribute with a string value, its key given encoded (`key`): the
    attributes that differ from request to request (a path, a request id)."""
    data = value.encode("utf-8", "replace")
    size = len(data)
    total = len(encoded_key) + size + 4  # the KeyValue: key, then an AnyValue of 2 + size
    if total < 0x80:  # every length fits one byte: one join, no intermediate bytes
        return b"".join(
            (
                SPAN_ATTRIBUTE,
                _SHORT[total],
                encoded_key,
                b"\x12",
                _SHORT[size + 2],
                b"\x0a",
                _SHORT[size],
                data,
            )
        )
    pair = encoded_key + _field(b"\x12", _field(b"\x0a", data))
    return SPAN_ATTRIBUTE + _varint(len(pair)) + pair


def name_kind(name: str, kind: int) -> bytes:
    """``Span.name`` and ``Span.kind`` (`SERVER`, `CLIENT`)."""
    return _field(b"\x2a", name.encode("utf-8", "replace")) + b"\x30" + _varint(kind)


def status(error: bool, message: str | None = None) -> bytes:
    """``Span.status``: nothing for UNSET, else ERROR with ``message``."""
    if not error:
        return b""
    body = b"\x18\x02"  # code: ERROR
    if message:
        body = _field(b"\x12", message.encode("utf-8", "replace")) + body
    return _field(b"\x7a", body)


def event(name: str, time_ns: int, values: Mapping[str, Any]) -> bytes:
    """One ``Span.events`` entry."""
    body = (
        b"\x09"
        + _FIXED64.pack(time_ns)
        + _field(b"\x12", name.encode())
        + attributes(values, EVENT_ATTRIBUTE)
    )
    return _field(b"\x5a", body)


def span(
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes | None,
    remote_parent: bool,
    head: bytes,
    start_ns: int,
    end_ns: int,
    body: bytes,
) -> bytes:
    """One span as an element of ``ScopeSpans.spans``: ``trace_id`` (16 bytes),
    ``span_id`` and ``parent_id`` (8), ``head`` from `name_kind`, and ``body`` the
    span's attributes, then its events, then its status."""
    parts = b"".join(
        (
            b"\x0a\x10",
            trace_id,
            b"\x12\x08",
            span_id,
            b"" if parent_id is None else b"\x22\x08" + parent_id,
            head,
            _TIMES.pack(0x39, start_ns, 0x41, end_ns),
            body,
            _FLAGS_REMOTE if remote_parent else _FLAGS_LOCAL,
        )
    )
    return b"\x12" + _varint(len(parts)) + parts


def scope(name: str, version: str) -> bytes:
    """An ``InstrumentationScope`` message."""
    return _field(b"\x0a", name.encode()) + _field(b"\x12", version.encode())


def export_request(spans: list[bytes], resource: bytes, scope: bytes) -> bytes:
    """An ``ExportTraceServiceRequest`` of ``spans`` (each from `span`), all of one
    resource and scope (given encoded: the resource's `attributes` under
    `RESOURCE_ATTRIBUTE`, the `scope` message). The spans are copied once: the
    enclosing messages' lengths are added up rather than each message built."""
    scope_field = _field(b"\x0a", scope)
    scope_spans = len(scope_field) + sum(map(len, spans))
    scope_spans_head = b"\x12" + _varint(scope_spans)
    resource_field = _field(b"\x0a", resource)
    resource_spans = len(resource_field) + len(scope_spans_head) + scope_spans
    head = b"\x0a" + _varint(resource_spans) + resource_field + scope_spans_head + scope_field
    return b"".join([head, *spans])
