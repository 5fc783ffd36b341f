"""W3C Trace Context (https://www.w3.org/TR/trace-context/): reading ``traceparent`` and
``tracestate`` from a client, and writing the ``traceparent`` of a try upstream.

Pure functions over header values. A ``traceparent`` that breaks any rule of the
spec (version ``ff``, upper-case hex, all-zero ids, a version ``00`` value with more
fields, several ``traceparent`` headers) is ignored: the gateway starts a new trace, and
drops the client's ``tracestate`` with it, as the spec asks.
"""

from __future__ import annotations

import random
import re
from typing import Final, NamedTuple

__all__ = [
    "MAX_TRACESTATE",
    "TraceParent",
    "format_traceparent",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "parse_tracestate",
]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
#: The spec asks vendors to pass on at least 512 characters of ``tracestate``, in at
#: most 32 list members; a longer one loses its members over 128 characters first.
MAX_TRACESTATE: Final = 512
_MAX_MEMBERS: Final = 32
_LONG_MEMBER: Final = 128
#: ``key=value``: a key of lower-case letters, digits and ``_-*/@`` (``@`` for a
#: tenant), a value of printable ASCII but ``,`` and ``=``, not ending in a space.
_MEMBER = re.compile(
    r"[a-z0-9][_0-9a-z\-*/@]{0,255}"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


class TraceParent(NamedTuple):
    """A valid incoming ``traceparent``: its trace id, the caller's span id, sampled."""

    trace_id: str
    span_id: str
    sampled: bool


def parse_traceparent(values: list[str]) -> TraceParent | None:
    """The parent in ``values`` (every ``traceparent`` header sent), None when there is
    none or it is not valid."""
    if len(values) != 1:
        return None
    match = _TRACEPARENT.fullmatch(values[0].strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1))


def parse_tracestate(values: list[str]) -> str | None:
    """The ``tracestate`` to pass on (every header joined), bounded by `MAX_TRACESTATE`
    characters and 32 members; None when there is nothing valid to pass on."""
    members = [m.strip(" \t") for v in values for m in v.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > _MAX_MEMBERS:
        return None
    if not all(_MEMBER.fullmatch(m) for m in members):
        return None
    value = ",".join(members)
    if len(value) <= MAX_TRACESTATE:
        return value
    members = [m for m in members if len(m) <= _LONG_MEMBER]
    while members and len(",".join(members)) > MAX_TRACESTATE:
        members.pop()
    return ",".join(members) or None


def new_trace_id() -> str:
    """A random, non-zero trace id (32 lower-case hex digits)."""
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random, non-zero span id (16 lower-case hex digits)."""
    return f"{random.getrandbits(64) or 1:016x}"


def format_traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"
