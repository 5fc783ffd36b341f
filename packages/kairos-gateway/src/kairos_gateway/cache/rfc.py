"""RFC 9111 for a shared cache, as pure functions of headers and clocks.

No I/O: the cache policy asks these what it may store, for how long, and whether an
entry may answer a request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from email.utils import formatdate, parsedate_to_datetime
from typing import Final

__all__ = [
    "UNSATISFIABLE",
    "Directives",
    "byte_range",
    "directives",
    "freshness",
    "http_date",
    "if_range_matches",
    "normalise_vary_value",
    "not_modified",
    "parse_date",
    "vary_names",
]

Directives = Mapping[str, str | None]

#: Headers of a 304 that update a stored response (RFC 9111 4.3.4: all but these).
KEEP_ON_UPDATE: Final = frozenset({"content-length", "content-encoding", "transfer-encoding"})


def directives(values: Iterable[str]) -> dict[str, str | None]:
    """``Cache-Control`` header values as ``{directive: argument or None}``, names
    lower-cased, quoted arguments unquoted; the first occurrence of a directive wins."""
    out: dict[str, str | None] = {}
    for value in values:
        for part in value.split(","):
            name, eq, arg = part.strip().partition("=")
            name = name.strip().lower()
            if not name or name in out:
                continue
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            out[name] = arg if eq else None
    return out


def seconds(value: str | None) -> int | None:
    """A delta-seconds argument, or None when absent or malformed."""
    if value is None or not value.isdigit():
        return None
    return int(value)


def parse_date(value: str | None) -> float | None:
    """An HTTP-date as a POSIX time, or None (an invalid ``Expires`` means "expired")."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def http_date(when: float) -> str:
    return formatdate(when, usegmt=True)


def freshness(
    cc: Directives, expires: str | None, date: str | None, now: float, default: int | None
) -> int | None:
    """The freshness lifetime in seconds (RFC 9111 4.2.1, shared cache), ``default``
    when the response states none, None when it states none and there is no default."""
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            return seconds(cc[directive]) or 0
    if expires is not None:
        at = parse_date(expires)
        if at is None:
            return 0
        base = parse_date(date) or now
        return max(0, int(at - base))
    return default


def vary_names(values: Sequence[str]) -> tuple[str, ...] | None:
    """The request headers a response varies on, lower-cased and sorted; None for
    ``Vary: *`` (never served from a cache)."""
    names: set[str] = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def normalise_vary_value(name: str, values: Sequence[str]) -> str:
    """A request header's values as one string that ignores spacing, the split into
    several lines, and (for the ``Accept*`` negotiation headers) case."""
    items = [" ".join(item.split()) for value in values for item in value.split(",")]
    text = ",".join(item for item in items if item)
    return text.lower() if name.startswith("accept") else text


def not_modified(
    request_headers: Mapping[str, str], etag: str | None, last_modified: str | None
) -> bool:
    """Would the client's ``If-None-Match`` / ``If-Modified-Since`` make this a 304
    (RFC 9110 13.1: ``If-None-Match`` wins, weak comparison)?"""
    inm = request_headers.get("If-None-Match")
    if inm is not None:
        if etag is None:
            return False
        if inm.strip() == "*":
            return True
        wanted = _weak(etag)
        return any(_weak(tag) == wanted for tag in inm.split(","))
    ims = request_headers.get("If-Modified-Since")
    if ims is not None and last_modified is not None:
        since, modified = parse_date(ims), parse_date(last_modified)
        return since is not None and modified is not None and modified <= since
    return False


def _weak(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


#: `byte_range`'s answer for a range that selects no byte of the representation (416).
UNSATISFIABLE: Final = (-1, -1)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def byte_range(value: str, length: int) -> tuple[int, int] | None:
    """The one byte range a ``Range`` header asks of a ``length``-byte representation
    (RFC 9110 14.1.2), as (first, last) inclusive; `UNSATISFIABLE` when it selects no
    byte; None to answer the whole representation (another unit, several ranges, a
    malformed header: RFC 9110 14.2 allows ignoring them)."""
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    if not first:  # bytes=-n: the last n bytes
        if not _digits(last):
            return None
        suffix = int(last)
        if suffix == 0 or length == 0:
            return UNSATISFIABLE
        return max(0, length - suffix), length - 1
    if not _digits(first) or (last and not _digits(last)):
        return None
    start = int(first)
    end = int(last) if last else length - 1
    if last and end < start:
        return None  # invalid: the header is ignored
    if start >= length:
        return UNSATISFIABLE
    return start, min(end, length - 1)


def if_range_matches(value: str, etag: str | None, last_modified: str | None) -> bool:
    """Does an ``If-Range`` validator still name the stored representation (RFC 9110
    13.1.5: an entity tag by strong comparison, a date by exact match)?"""
    value = value.strip()
    if value.startswith(("W/", '"')):
        return etag is not None and not etag.startswith("W/") and value == etag.strip()
    return last_modified is not None and parse_date(value) is not None and value == last_modified
