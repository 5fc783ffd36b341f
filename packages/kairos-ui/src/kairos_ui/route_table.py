"""The Routes table as plain data: one row of text per route, the search language,
sorting and paging. No UI here, so it is tested as tables of values.

A search is words, all of which must match. A bare word matches anywhere in the row;
``path:``, ``name:``, ``tag:``, ``backend:`` and ``method:`` look in that column only
(``method:`` and ``tag:`` compare whole values, the others substrings; all ignore case).

Routes may carry an optional ``name`` and ``tags``; they are read with `getattr`, so the
table shows and filters them wherever the route model has them and stays blank where
it does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kairos_core import Router

__all__ = [
    "COLUMNS",
    "PAGE_SIZES",
    "Query",
    "page_of",
    "parse_query",
    "route_key",
    "route_name",
    "route_row",
    "route_tags",
    "select",
    "sort_routes",
]

#: Rows per page offered; the first is the default.
PAGE_SIZES: tuple[int, ...] = (25, 50, 100)
#: (key, header) of the sortable columns, in display order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("path", "Path"),
    ("methods", "Methods"),
    ("backends", "Backends"),
    ("strategy", "Strategy"),
    ("auth", "Auth"),
    ("rate_limit", "Rate limit"),
)
#: Search qualifiers and the row field each one looks in.
QUALIFIERS: tuple[str, ...] = ("path", "name", "tag", "backend", "method")


def route_name(route: object) -> str:
    """The route's optional ``name`` ("" when the model has none or it is unset)."""
    name = getattr(route, "name", None)
    return name if isinstance(name, str) else ""


def route_tags(route: object) -> tuple[str, ...]:
    """The route's optional ``tags`` (empty when the model has none)."""
    tags = getattr(route, "tags", None)
    if not isinstance(tags, list | tuple | set | frozenset):
        return ()
    return tuple(sorted(str(tag) for tag in tags))


def route_key(route: Router) -> str:
    """Identifies a route in the table: routes may share a path with other methods."""
    return f"{route.methods[0]} {route.external_path}"


def _limit_text(route: Router) -> str:
    if route.opts_out_of("rate_limit"):
        return "off"
    limit = route.rate_limit
    if limit is None:
        return "gateway-wide"
    if limit.requests_per_second is not None:
        return f"{limit.requests_per_second:g}/s per {limit.key}"
    return f"{limit.requests_per_window} per {limit.window_seconds:g} s per {limit.key}"


def _plugins_text(route: Router) -> str:
    """The route's own plugin entries by name; ``(off)``: turned off on this route."""
    return ", ".join(
        entry.name if entry.enabled else f"{entry.name} (off)" for entry in route.plugins or ()
    )


def route_row(route: Router) -> dict[str, str]:
    """The table's text for one route."""
    return {
        "path": route.external_path,
        "name": route_name(route),
        "tags": " ".join(route_tags(route)),
        "internal": route.internal_path,
        "methods": " ".join(route.methods),
        "backends": "\n".join(
            f"{b.address} (weight {b.weight})" if b.weight != 1 else b.address
            for b in route.backends
        ),
        "strategy": route.load_balancing_strategy.replace("_", " "),
        "auth": "JWT" if route.auth_required else "none",
        "rate_limit": _limit_text(route),
        "plugins": _plugins_text(route),
    }


@dataclass(frozen=True)
class Query:
    """A parsed search: bare words, and words per qualifier (all lower case)."""

    words: tuple[str, ...] = ()
    qualified: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def matches(self, route: Router) -> bool:
        row = route_row(route)
        if self.words:
            haystack = " ".join(row.values()).lower()
            if not all(word in haystack for word in self.words):
                return False
        for qualifier, wanted in self.qualified.items():
            if not all(_qualified_match(qualifier, word, route, row) for word in wanted):
                return False
        return True


def _qualified_match(qualifier: str, word: str, route: Router, row: dict[str, str]) -> bool:
    if qualifier == "method":
        return word in (m.lower() for m in route.methods)
    if qualifier == "tag":
        return word in (t.lower() for t in route_tags(route))
    if qualifier == "backend":
        return word in row["backends"].lower()
    if qualifier == "name":
        return word in row["name"].lower()
    return word in route.external_path.lower()  # path


def parse_query(text: str | None) -> Query:
    """``"tag:billing method:post users"`` -> words ``users``, tag ``billing``, method
    ``post``. An unknown qualifier (``foo:bar``) is a bare word, as typed."""
    words: list[str] = []
    qualified: dict[str, list[str]] = {}
    for part in (text or "").lower().split():
        qualifier, colon, value = part.partition(":")
        if colon and qualifier in QUALIFIERS and value:
            qualified.setdefault(qualifier, []).append(value)
        else:
            words.append(part)
    return Query(tuple(words), {k: tuple(v) for k, v in qualified.items()})


def _sort_value(route: Router, column: str) -> Any:
    if column == "path":
        return (route.external_path.lower(), route.methods[0])
    if column == "name":
        return (route_name(route).lower() or "\uffff", route.external_path.lower())
    return (route_row(route)[column].lower(), route.external_path.lower())


def sort_routes(routes: Sequence[Router], column: str, descending: bool = False) -> list[Router]:
    """``routes`` ordered by a column of `COLUMNS` (or ``name``), ties by path."""
    return sorted(routes, key=lambda r: _sort_value(r, column), reverse=descending)


def select(
    routes: Sequence[Router], query: str | None, column: str = "path", descending: bool = False
) -> list[Router]:
    """The routes ``query`` finds, sorted: what the table shows, before paging."""
    parsed = parse_query(query)
    return sort_routes([r for r in routes if parsed.matches(r)], column, descending)


def page_of(items: Sequence[Any], page: int, size: int) -> tuple[list[Any], int, int]:
    """(items on ``page`` (1-based, clamped to the last), that page, page count)."""
    pages = max(1, -(-len(items) // size))
    page = min(max(1, page), pages)
    start = (page - 1) * size
    return list(items[start : start + size]), page, pages
