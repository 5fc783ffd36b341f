"""Path templates: syntax, validation and dot-segment detection.

A template is an absolute path whose segments are literals, ``{name}`` (exactly one
non-empty segment) or, as the last segment of an external path only, ``{*name}``
(the non-empty rest of the path, slashes included). A placeholder fills a whole
segment. Paths are compared as received (still percent-encoded), so a template must
be ASCII with other characters percent-encoded.

Every check raises `ValueError` with a message meant for the operator; the config
models and the route table both call these functions, so the rules live here once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import unquote

__all__ = [
    "RESERVED_PATHS",
    "RESERVED_PREFIXES",
    "PathTemplate",
    "Segment",
    "SegmentKind",
    "has_dot_segment",
    "holds_separator",
    "parse_external_path",
    "parse_internal_path",
    "path_problem",
]

RESERVED_PATHS: frozenset[str] = frozenset(
    {
        "/health",
        "/ready",
        "/live",
        "/metrics",
        "/api/audit",
        "/api/backends",
        "/api/plugins",
        "/api/cache",
        "/api/events",
        "/api/openapi.json",
        "/api/whoami",
    }
)
"""Paths the gateway serves itself; a route may not use them."""

RESERVED_PREFIXES: tuple[str, ...] = ("/api/routes", "/api/config", "/api/metrics", "/api/ai")
"""Management API roots: a route may be neither one of these nor anything under them."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_DECODE_ROUNDS = 4
_SEPARATORS = re.compile(r"[/\\]")
#: Lead bytes that only an overlong (invalid) UTF-8 encoding of an ASCII character
#: starts with: ``%c0``/``%c1`` (2 bytes), ``%e0%80``-``%e0%9f`` (3), ``%f0%80``-``%f0%8f`` (4).
_OVERLONG = re.compile(r"%c[01]|%e0%[89][0-9a-f]|%f0%8[0-9a-f]", re.IGNORECASE)
_U_ESCAPE = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)


class SegmentKind(IntEnum):
    """Ordered by precedence: a literal beats a param, which beats a tail."""

    LITERAL = 0
    PARAM = 1
    TAIL = 2


@dataclass(frozen=True, slots=True)
class Segment:
    kind: SegmentKind
    text: str
    """The literal text, or the placeholder's name."""


@dataclass(frozen=True, slots=True)
class PathTemplate:
    raw: str
    segments: tuple[Segment, ...]

    @property
    def is_static(self) -> bool:
        return all(s.kind is SegmentKind.LITERAL for s in self.segments)

    @property
    def names(self) -> dict[str, SegmentKind]:
        return {s.text: s.kind for s in self.segments if s.kind is not SegmentKind.LITERAL}

    @property
    def shape(self) -> tuple[str, ...]:
        """The pattern with placeholder names erased: equal shapes match the same paths."""
        marks = {SegmentKind.PARAM: "{}", SegmentKind.TAIL: "{*}"}
        return tuple(marks.get(s.kind, s.text) for s in self.segments)

    @property
    def literal_prefix(self) -> str:
        """The path up to (not including) the first placeholder segment."""
        parts: list[str] = []
        for s in self.segments:
            if s.kind is not SegmentKind.LITERAL:
                break
            parts.append(s.text)
        return "/" + "/".join(parts)


def has_dot_segment(path: str) -> bool:
    """Whether ``path`` has a ``.`` or ``..`` segment, however it is percent-encoded.

    ``/`` and ``\\`` both separate segments, encoded or not, and a segment's path
    parameters do not hide it (``..;x`` is ``..`` to a Tomcat or Spring backend, which
    drops ``;x``); decoding repeats (up to a bound) to catch double encoding such as
    ``%252e``. A path still changing after the bound is treated as hostile.
    """
    if "." not in path and "%" not in path and "\\" not in path:
        return False
    return _dotted(path)


def path_problem(path: str) -> str | None:
    """Why a request path must not be routed, or None: a dot segment (see
    `has_dot_segment`), a NUL byte, an overlong UTF-8 encoding (``%c0%ae`` is ``.``
    to lax decoders), a ``%u`` escape (IIS), or more layers of encoding than the bound.
    Checked on the raw path and after each round of decoding."""
    if "." not in path and "%" not in path and "\\" not in path:
        return None
    current = path
    for _ in range(_MAX_DECODE_ROUNDS):
        if _is_dotted(current):
            return "the path contains a '.' or '..' segment"
        if "\x00" in current:
            return "the path contains a NUL byte"
        if "%" in current:
            if _U_ESCAPE.search(current):
                return "the path contains a %u escape"
            if _OVERLONG.search(current):
                return "the path contains an overlong UTF-8 sequence"
        decoded = unquote(current)
        if decoded == current:
            return None
        current = decoded
    return "the path is percent-encoded too many times"


def holds_separator(value: str) -> bool:
    """Whether a path parameter's raw value holds a ``/`` or ``\\`` once percent-decoded
    (``%2F``, ``%5C``, ``%252F``: at any of the layers `path_problem` decodes), or a
    raw ``\\``: a backend that decodes it sees more segments than the route matched."""
    if "\\" in value:
        return True
    current = value
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(current)
        if decoded == current:
            return False
        if "/" in decoded or "\\" in decoded:
            return True
        current = decoded
    return True


def _is_dotted(text: str) -> bool:
    return any(seg.split(";", 1)[0] in (".", "..") for seg in _SEPARATORS.split(text))


def _dotted(path: str) -> bool:
    current = path
    for _ in range(_MAX_DECODE_ROUNDS):
        if _is_dotted(current):
            return True
        decoded = unquote(current)
        if decoded == current:
            return False
        current = decoded
    return True


def _check_path_text(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError("must start with '/'")
    for char in path:
        if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F:
            raise ValueError("must not contain whitespace or control characters")
        if not char.isascii():
            raise ValueError("must be ASCII; percent-encode other characters")
        if char in "?#":
            raise ValueError(f"must not contain {char!r}; the query string is not part of a route")
    if has_dot_segment(path):
        raise ValueError("must not contain a '.' or '..' segment")


def _parse_segment(text: str) -> Segment:
    if "{" not in text and "}" not in text:
        return Segment(SegmentKind.LITERAL, text)
    if not (text.startswith("{") and text.endswith("}")) or text.count("{") != 1:
        if text.count("{") != text.count("}"):
            raise ValueError(f"unbalanced braces in segment {text!r}")
        raise ValueError(f"segment {text!r}: a placeholder must fill a whole segment")
    if text.count("}") != 1:
        raise ValueError(f"unbalanced braces in segment {text!r}")
    inner = text[1:-1]
    kind = SegmentKind.PARAM
    if inner.startswith("*"):
        kind, inner = SegmentKind.TAIL, inner[1:]
    if not inner:
        raise ValueError(f"placeholder {text!r} has no name")
    if not _NAME.fullmatch(inner):
        raise ValueError(
            f"placeholder name {inner!r} is not an identifier (letters, digits and '_', "
            "not starting with a digit)"
        )
    return Segment(kind, inner)


def _parse(path: str) -> PathTemplate:
    _check_path_text(path)
    texts = path[1:].split("/")
    if "" in texts[:-1]:
        raise ValueError("must not contain an empty segment ('//')")
    segments = tuple(_parse_segment(text) for text in texts)
    seen: set[str] = set()
    for seg in segments:
        if seg.kind is SegmentKind.LITERAL:
            continue
        if seg.text in seen:
            raise ValueError(f"placeholder {seg.text!r} is used twice")
        seen.add(seg.text)
    return PathTemplate(path, segments)


def _reserved_reason(template: PathTemplate) -> str | None:
    prefix = template.literal_prefix
    if template.is_static and prefix in RESERVED_PATHS:
        return f"{prefix!r} is served by the gateway itself"
    for root in RESERVED_PREFIXES:
        if prefix == root or prefix.startswith(root + "/"):
            return f"paths under {root!r} belong to the gateway's management API"
    return None


def parse_external_path(path: str) -> PathTemplate:
    """Parse and check a route's ``external_path``; raises `ValueError`.

    Besides the syntax, a route may not claim a reserved gateway path. Only the
    literal prefix is checked, so ``/{x}`` or ``/api/{*rest}`` are allowed: the
    gateway matches its own paths before the route table.
    """
    template = _parse(path)
    for seg in template.segments[:-1]:
        if seg.kind is SegmentKind.TAIL:
            raise ValueError(f"tail placeholder {{*{seg.text}}} must be the last segment")
    reason = _reserved_reason(template)
    if reason is not None:
        raise ValueError(f"reserved path: {reason}")
    return template


def parse_internal_path(path: str, external: PathTemplate | None) -> PathTemplate:
    """Parse ``internal_path`` and check its placeholders against ``external``.

    Each placeholder must exist in the external path with the same kind; a tail may
    only fill the last segment. ``external`` is None when it was itself invalid,
    in which case only the syntax is checked.
    """
    template = _parse(path)
    if external is None:
        return template
    available = external.names
    last = len(template.segments) - 1
    for i, seg in enumerate(template.segments):
        if seg.kind is SegmentKind.LITERAL:
            continue
        kind = available.get(seg.text)
        if kind is None:
            raise ValueError(f"placeholder {seg.text!r} does not appear in external_path")
        if kind is SegmentKind.TAIL and (seg.kind is not SegmentKind.TAIL or i != last):
            raise ValueError(
                f"{{*{seg.text}}} spans several segments: use it as {{*{seg.text}}} "
                "in the last segment"
            )
        if kind is SegmentKind.PARAM and seg.kind is SegmentKind.TAIL:
            raise ValueError(
                f"{{{seg.text}}} is a one-segment placeholder in external_path: "
                f"write {{{seg.text}}}"
            )
    return template
