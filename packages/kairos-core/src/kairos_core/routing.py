"""The route table: routes compiled once, matched on every request.

`RouteTable.match(method, path)` returns a value and never raises for bad input:

- `Match`: the route, its params and the rendered upstream path;
- `MethodNotAllowedResult`: the path matched, the method did not (``allow`` is the
  union of the methods of every route whose path matched; ``route`` is the best-ranked
  of those routes, whose figures the refusal counts toward);
- `BadPath`: the path holds a ``.``/``..`` segment, however percent-encoded (and the
  other `path_problem` cases); or the matched route refuses it: a ``{param}`` value
  holding an encoded ``/`` or ``\\`` (unless ``allow_encoded_slash``), any ``;`` (with
  ``path_params: refuse``);
- `NoRoute`.

``path`` is the raw request path without the query string, still percent-encoded.
Params are cut from it as they are and substituted into ``internal_path`` without
decoding or re-encoding. There is no trailing-slash normalisation.

Precedence, among the routes whose path matches:

1. static routes (no placeholders), found with one dict lookup on the whole path;
2. dynamic routes with more literal segments;
3. left to right, at the first segment where two patterns differ: a literal beats
   ``{param}``, which beats ``{*tail}``.

The best-ranked route that allows the method wins; a route that does not allow it
never hides a lower-ranked one that does. Two patterns never tie: the same pattern
with overlapping methods is refused when the table is built.

Dynamic routes live in a segment trie (literal children by dict, one param child
and one set of tail routes per node), so matching cost depends on the path's depth,
not on the number of routes. The gateway's own paths (`RESERVED_PATHS`) are
matched before this table, and routes may not claim them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import ConfigError, FieldError
from .paths import (
    PathTemplate,
    SegmentKind,
    holds_separator,
    parse_external_path,
    parse_internal_path,
    path_problem,
)
from .route import Router
from .validation import duplicate_route_errors

__all__ = [
    "BadPath",
    "CompiledRoute",
    "Match",
    "MatchResult",
    "MethodNotAllowedResult",
    "NoRoute",
    "RouteTable",
]

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRoute:
    """A route ready for matching. ``template`` is ``external_path`` as configured."""

    config: Router
    index: int
    template: str
    methods: frozenset[str]
    # (is_param, text) pieces of internal_path; None when it has no placeholders.
    _pieces: tuple[tuple[bool, str], ...] | None = field(repr=False)
    # (segment index, name, is_tail) of each placeholder in external_path.
    _captures: tuple[tuple[int, str, bool], ...] = field(repr=False)
    # Smaller is better: (-literal segment count, segment kinds left to right).
    _rank: tuple[int, tuple[int, ...]] = field(repr=False)
    # True when a match needs `_refusal` (it checks only paths with '%', ';' or '\\').
    _guarded: bool = field(default=False, repr=False)
    # Segment indexes of the {param} captures whose value may not hold a separator.
    _no_slash: tuple[int, ...] = field(default=(), repr=False)

    def render(self, params: Mapping[str, str]) -> str:
        """``internal_path`` with ``params`` substituted as they are."""
        if self._pieces is None:
            return self.config.internal_path
        return "".join(params[text] if is_param else text for is_param, text in self._pieces)

    def _refusal(self, path: str, segments: list[str]) -> str | None:
        """Why this route refuses ``path`` although it matches (see `Router`), or None."""
        if ";" in path and self.config.path_params == "refuse":
            return "this route refuses ';' path parameters"
        for i in self._no_slash:
            if holds_separator(segments[i]):
                return "a path parameter holds an encoded '/' or '\\'"
        return None

    def _capture(self, segments: list[str]) -> Mapping[str, str]:
        if not self._captures:
            return _NO_PARAMS
        return {
            name: "/".join(segments[i:]) if is_tail else segments[i]
            for i, name, is_tail in self._captures
        }


@dataclass(frozen=True, slots=True)
class Match:
    route: CompiledRoute
    params: Mapping[str, str]
    upstream_path: str


@dataclass(frozen=True, slots=True)
class NoRoute:
    pass


@dataclass(frozen=True, slots=True)
class MethodNotAllowedResult:
    """The path matched, the method did not.

    ``allow`` is the answer (the ``Allow`` header). ``route`` is the best-ranked route
    whose path matched (by the precedence above), so the refusal can be counted as that
    route's traffic; it is set by `RouteTable.match` and left out of equality, which
    compares what the client is told.
    """

    allow: frozenset[str]
    route: CompiledRoute | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BadPath:
    reason: str


MatchResult = Match | NoRoute | MethodNotAllowedResult | BadPath

_NO_ROUTE = NoRoute()


class _Node:
    __slots__ = ("literal", "param", "routes", "tail")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.routes: tuple[CompiledRoute, ...] = ()
        self.tail: tuple[CompiledRoute, ...] = ()


def _collect(
    node: _Node, segments: list[str], i: int, out: list[tuple[CompiledRoute, ...]]
) -> None:
    """Append the routes of every trie path that matches ``segments[i:]``."""
    if i == len(segments):
        if node.routes:
            out.append(node.routes)
        return
    segment = segments[i]
    child = node.literal.get(segment)
    if child is not None:
        _collect(child, segments, i + 1, out)
    if segment:
        if node.param is not None:
            _collect(node.param, segments, i + 1, out)
        if node.tail:
            out.append(node.tail)
    elif node.tail and i + 1 < len(segments):
        out.append(node.tail)


def _by_rank(route: CompiledRoute) -> tuple[int, tuple[int, ...]]:
    return route._rank


def _pieces(template: PathTemplate) -> tuple[tuple[bool, str], ...] | None:
    if template.is_static:
        return None
    pieces: list[tuple[bool, str]] = []
    text = ""
    for segment in template.segments:
        text += "/"
        if segment.kind is SegmentKind.LITERAL:
            text += segment.text
            continue
        pieces.append((False, text))
        pieces.append((True, segment.text))
        text = ""
    if text:
        pieces.append((False, text))
    return tuple(pieces)


def _compile(
    index: int, route: Router, external: PathTemplate, internal: PathTemplate
) -> CompiledRoute:
    kinds = tuple(int(s.kind) for s in external.segments)
    literals = kinds.count(int(SegmentKind.LITERAL))
    captures = tuple(
        (i, s.text, s.kind is SegmentKind.TAIL)
        for i, s in enumerate(external.segments)
        if s.kind is not SegmentKind.LITERAL
    )
    no_slash = (
        () if route.allow_encoded_slash else tuple(i for i, _, is_tail in captures if not is_tail)
    )
    return CompiledRoute(
        config=route,
        index=index,
        template=route.external_path,
        methods=frozenset(route.methods),
        _pieces=_pieces(internal),
        _captures=captures,
        _rank=(-literals, kinds),
        _guarded=bool(no_slash) or route.path_params == "refuse",
        _no_slash=no_slash,
    )


def _path_error(index: int, name: str, exc: ValueError, path: str) -> FieldError:
    return FieldError(("routers", index, name), str(exc), path)


class RouteTable:
    """An immutable, compiled set of routes. Raises `ConfigError` on bad routes."""

    __slots__ = ("_root", "_routes", "_static")

    def __init__(self, routes: Sequence[Router]) -> None:
        errors: list[FieldError] = []
        externals: list[PathTemplate] = []
        internals: list[PathTemplate] = []
        for index, route in enumerate(routes):
            try:
                external = parse_external_path(route.external_path)
            except ValueError as exc:
                errors.append(_path_error(index, "external_path", exc, route.external_path))
                continue
            try:
                internal = parse_internal_path(route.internal_path, external)
            except ValueError as exc:
                errors.append(_path_error(index, "internal_path", exc, route.internal_path))
                continue
            externals.append(external)
            internals.append(internal)
        if not errors:
            errors = duplicate_route_errors(routes, externals)
        if errors:
            raise ConfigError(errors)

        self._routes = tuple(
            _compile(i, route, externals[i], internals[i]) for i, route in enumerate(routes)
        )
        static: dict[str, tuple[CompiledRoute, ...]] = {}
        self._root = _Node()
        for compiled, external in zip(self._routes, externals, strict=True):
            if external.is_static:
                static[compiled.template] = (*static.get(compiled.template, ()), compiled)
            else:
                self._insert(compiled, external)
        self._static = static

    def _insert(self, compiled: CompiledRoute, external: PathTemplate) -> None:
        node = self._root
        for segment in external.segments:
            if segment.kind is SegmentKind.TAIL:
                node.tail = (*node.tail, compiled)
                return
            if segment.kind is SegmentKind.PARAM:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literal.setdefault(segment.text, _Node())
        node.routes = (*node.routes, compiled)

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[CompiledRoute]:
        return iter(self._routes)

    def match(self, method: str, path: str) -> MatchResult:
        """Find the route for ``method`` (upper case) and raw ``path``. Never raises."""
        if not path.startswith("/"):
            return _NO_ROUTE
        problem = path_problem(path)
        if problem is not None:
            return BadPath(problem)
        static = self._static.get(path, ())
        for route in static:
            if method in route.methods:
                return Match(route, _NO_PARAMS, route.render(_NO_PARAMS))

        segments = path[1:].split("/")
        found: list[tuple[CompiledRoute, ...]] = []
        _collect(self._root, segments, 0, found)
        best: CompiledRoute | None = None
        for routes in found:
            for route in routes:
                if method in route.methods and (best is None or route._rank < best._rank):
                    best = route
        if best is not None:
            if best._guarded and ("%" in path or ";" in path or "\\" in path):
                refusal = best._refusal(path, segments)
                if refusal is not None:
                    return BadPath(refusal)
            params = best._capture(segments)
            return Match(best, params, best.render(params))
        if not static and not found:
            return _NO_ROUTE
        allow: set[str] = set()
        for route in static:
            allow.update(route.methods)
        for routes in found:
            for route in routes:
                allow.update(route.methods)
        # A static route outranks every dynamic one (and all of them share its template).
        owner = static[0] if static else min((r for rs in found for r in rs), key=_by_rank)
        return MethodNotAllowedResult(frozenset(allow), owner)
