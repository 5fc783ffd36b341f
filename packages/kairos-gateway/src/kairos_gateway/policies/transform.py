"""The ``transform`` plugin: rewrite the upstream request and the client's response.

Configured like any plugin (``plugins: [{"name": "transform", "config": {...}}]``, at the
top level or per route; `kairos_core.transform.TransformConfig`). Everything is
compiled when the snapshot is built: templates into tuples of literals and getters,
header names lower-cased, regexes compiled; a request pays only for the operations
its route configures.

Request side (``before_upstream``, after JWT so ``${claim.*}`` is known): header
operations on the upstream headers (``Host`` sets the upstream host), a path rewrite
whose result must still be a safe path (else 400 ``invalid_path``), query parameter
operations that leave untouched parameters byte for byte as the client sent them.
Response side (``on_response``): header operations, and status mapping of backend
responses, optionally to a problem+json answer of the gateway's own.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote, unquote_plus

from kairos_core import BadRequest, InvalidPath, KairosError, path_problem
from kairos_core.transform import (
    HeaderOps,
    JsonBodyOps,
    QueryOps,
    TransformConfig,
    parse_template,
)

from ..chain import Policy, Request, ResponseHead, UpstreamRequest
from ..messages import reason_phrase

__all__ = [
    "BackendStatus",
    "Transform",
    "TransformJsonBody",
    "TransformRequest",
    "TransformResponse",
    "compile_template",
    "transform_policy",
]

Headers = list[tuple[str, str]]
Render = Callable[[Request], str]

#: CR, LF and NUL never reach a header from a request value.
_CONTROL: Final = {ord("\r"): None, ord("\n"): None, 0: None}


class BackendStatus(KairosError):
    """A backend status mapped to a problem of the gateway's own (a subclass per
    mapping sets ``status`` and ``title``)."""

    type = "backend_status"


def _claim(request: Request, name: str) -> str:
    claims = request.claims
    value = None if claims is None else claims.get(name)
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _query(request: Request, name: str) -> str:
    for piece in request.query.split("&"):
        raw, _, value = piece.partition("=")
        if unquote_plus(raw) == name:
            return unquote_plus(value)
    return ""


def _getter(kind: str, name: str, where: str) -> Render:
    if kind == "request_id":
        return lambda r: r.request_id
    if kind == "client_ip":
        return lambda r: r.client_ip
    if kind == "method":
        return lambda r: r.method
    if kind == "route":
        return lambda r: "" if r.route is None else r.route.template
    if kind == "path":
        return lambda r: r.params.get(name, "")
    if kind == "query":
        return lambda r: _query(r, name)
    if kind == "header":
        return lambda r: r.headers.get(name, "")
    if kind == "claim":
        return lambda r: _claim(r, name)
    raise AssertionError(f"{where}: unexpected template part {kind}")  # pragma: no cover


def compile_template(text: str, where: str) -> Render | str:
    """``text`` as a constant (no variable, or only ``${env.*}``) or a function of the
    request."""
    parts: list[str | Render] = []
    for kind, name in parse_template(text):
        if kind == "text":
            parts.append(name)
        elif kind == "env":
            value = os.environ.get(name)
            if value is None:
                raise ValueError(f"{where}: ${{env.{name}}} is not set in the environment")
            parts.append(value)
        else:
            parts.append(_getter(kind, name, where))
    # Literals next to each other (an env value beside text) as one.
    merged: list[str | Render] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    if not merged:
        return ""
    if len(merged) == 1:
        return merged[0]
    steps = tuple(merged)
    return lambda r: "".join(p if isinstance(p, str) else p(r) for p in steps)


#: A piece of a path replacement: literal text, or a function of the match and request.
_Piece = str | Callable[[re.Match[str], Request], str]
_GROUP_REF: Final = re.compile(r"\\(\d+)|\\g<(\w+)>")


def _group(key: int | str) -> Callable[[re.Match[str], Request], str]:
    return lambda found, _request: found.group(key) or ""


def _encoded_value(get: Render) -> Callable[[re.Match[str], Request], str]:
    return lambda _found, request: quote(get(request), safe="")


def _replacement(text: str, where: str) -> tuple[_Piece, ...]:
    """A path replacement compiled once: literal text, the pattern's groups (``\\1``,
    ``\\g<name>``) and template values, percent-encoded."""
    pieces: list[_Piece] = []
    for kind, name in parse_template(text):
        if kind == "text":
            at = 0
            for ref in _GROUP_REF.finditer(name):
                if ref.start() > at:
                    pieces.append(name[at : ref.start()])
                key = ref.group(1) or ref.group(2)
                pieces.append(_group(int(key) if key.isdigit() else key))
                at = ref.end()
            if at < len(name):
                pieces.append(name[at:])
        elif kind == "env":
            value = os.environ.get(name)
            if value is None:
                raise ValueError(f"{where}: ${{env.{name}}} is not set in the environment")
            pieces.append(quote(value, safe=""))
        else:
            pieces.append(_encoded_value(_getter(kind, name, where)))
    return tuple(pieces)


def _value(template: Render | str, request: Request) -> str:
    text = template if isinstance(template, str) else template(request)
    return text.translate(_CONTROL)


class _HeaderOps:
    """`HeaderOps` compiled: removals, renames and the removals ``set`` implies are one
    pass over the headers with one dict lookup each."""

    __slots__ = ("append", "plan", "replace", "sets_host")

    def __init__(self, ops: HeaderOps, where: str) -> None:
        replaced = {name.lower() for name in ops.set}
        #: Lower-case name -> new name, or None to drop it.
        self.plan: dict[str, str | None] = {name.lower(): None for name in ops.remove}
        for old, new in ops.rename.items():
            self.plan.setdefault(old.lower(), None if new.lower() in replaced else new)
        self.plan.update(dict.fromkeys(replaced))
        self.replace = tuple(
            (r.name.lower(), re.compile(r.pattern), compile_template(r.replacement, where))
            for r in ops.replace
        )
        self.append = tuple(
            (name, compile_template(v, where)) for name, v in [*ops.set.items(), *ops.add.items()]
        )
        self.sets_host = any(name.lower() == "host" for name, _ in self.append)

    def apply(self, headers: Headers, request: Request) -> Headers:
        plan = self.plan
        if plan:
            kept: Headers = []
            for name, value in headers:
                lower = name.lower()
                if lower in plan:
                    new = plan[lower]
                    if new is not None:
                        kept.append((new, value))
                else:
                    kept.append((name, value))
            headers = kept
        for lower, pattern, replacement in self.replace:
            text = _value(replacement, request)
            headers = [
                (n, pattern.sub(text, v).translate(_CONTROL)) if n.lower() == lower else (n, v)
                for n, v in headers
            ]
        for name, template in self.append:
            headers.append((name, _value(template, request)))
        return headers


class _QueryOps:
    """`QueryOps` compiled; works on the raw ``name=value`` pieces of the query."""

    __slots__ = ("add", "remove", "rename", "set")

    def __init__(self, ops: QueryOps, where: str) -> None:
        self.remove = frozenset(ops.remove)
        self.rename = {old: quote(new, safe="") for old, new in ops.rename.items()}
        self.set = tuple(
            (quote(n, safe=""), n, compile_template(v, where)) for n, v in ops.set.items()
        )
        self.add = tuple(
            (quote(n, safe=""), compile_template(v, where)) for n, v in ops.add.items()
        )

    def apply(self, query: str, request: Request) -> str:
        pieces = [p for p in query.split("&") if p] if query else []
        dropped = self.remove | {name for _, name, _ in self.set}
        kept: list[str] = []
        for piece in pieces:
            raw, eq, value = piece.partition("=")
            name = unquote_plus(raw)
            if name in dropped:
                continue
            new = self.rename.get(name)
            kept.append(piece if new is None else f"{new}{eq}{value}")
        for encoded, _, template in self.set:
            kept.append(f"{encoded}={quote(_value(template, request), safe='')}")
        for encoded, template in self.add:
            kept.append(f"{encoded}={quote(_value(template, request), safe='')}")
        return "&".join(kept)


class _JsonBody:
    """`JsonBodyOps` compiled: dotted paths split, template strings compiled."""

    __slots__ = ("max_bytes", "remove", "set")

    def __init__(self, ops: JsonBodyOps, where: str) -> None:
        self.max_bytes = ops.max_bytes
        self.remove = tuple(tuple(path.split(".")) for path in ops.remove)
        self.set = tuple(
            (tuple(path.split(".")), compile_template(v, where) if isinstance(v, str) else v)
            for path, v in ops.set.items()
        )

    def apply(self, body: bytes, request: Request) -> bytes:
        try:
            document = json.loads(body) if body else {}
        except ValueError:
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(document, dict):
            raise BadRequest("the request body is not a JSON object")
        for path in self.remove:
            parent = _walk(document, path[:-1], create=False)
            if parent is not None:
                parent.pop(path[-1], None)
        for path, value in self.set:
            parent = _walk(document, path[:-1], create=True)
            if parent is None:
                raise BadRequest(f"the request body's {'.'.join(path[:-1])} is not an object")
            parent[path[-1]] = value(request) if callable(value) else value
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _walk(
    document: dict[str, Any], path: tuple[str, ...], *, create: bool
) -> dict[str, Any] | None:
    """The object at ``path`` (created on the way with ``create``), or None."""
    node = document
    for key in path:
        child = node.get(key)
        if child is None and create:
            child = node[key] = {}
        if not isinstance(child, dict):
            return None
        node = child
    return node


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class _Compiled(Policy):
    """The compiled ``transform`` settings of one route (see `transform_policy`)."""

    __slots__ = ("json_body", "path", "query", "request_headers", "response_headers", "statuses")

    def __init__(self, config: TransformConfig) -> None:
        request, response = config.request, config.response
        self.json_body = (
            None
            if request is None or request.json_body is None
            else _JsonBody(request.json_body, "request.json_body")
        )
        self.request_headers = (
            None
            if request is None or request.headers is None
            else _HeaderOps(request.headers, "request.headers")
        )
        self.query = (
            None
            if request is None or request.query is None
            else _QueryOps(request.query, "request.query")
        )
        rewrite = None if request is None else request.path
        self.path: tuple[re.Pattern[str], tuple[_Piece, ...]] | None = (
            None
            if rewrite is None
            else (
                re.compile(rewrite.pattern),
                _replacement(rewrite.replacement, "request.path.replacement"),
            )
        )
        self.response_headers = (
            None
            if response is None or response.headers is None
            else _HeaderOps(response.headers, "response.headers")
        )
        self.statuses: dict[int, tuple[int, str, type[BackendStatus] | None]] = {}
        for mapping in () if response is None else response.status:
            phrase = reason_phrase(mapping.to)
            problem = (
                type(
                    f"BackendStatus{mapping.to}",
                    (BackendStatus,),
                    {"status": mapping.to, "title": phrase or "Backend status"},
                )
                if mapping.problem
                else None
            )
            self.statuses[mapping.from_] = (mapping.to, phrase, problem)


class TransformRequest(_Compiled):
    """Only the request side is configured."""

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        ops = self.request_headers
        if ops is not None:
            headers = ops.apply(upstream.headers, request)
            if ops.sets_host:
                upstream.host = next(v for n, v in reversed(headers) if n.lower() == "host")
                headers = [(n, v) for n, v in headers if n.lower() != "host"]
            upstream.headers = headers
        if self.path is None and self.query is None:
            return
        path, mark, query = upstream.target.partition("?")
        if self.path is not None:
            pattern, pieces = self.path
            found = pattern.fullmatch(path)
            if found is not None:
                path = "".join(p if isinstance(p, str) else p(found, request) for p in pieces)
                problem = (
                    "the rewritten path does not start with '/'"
                    if not path.startswith("/")
                    else path_problem(path)
                )
                if problem is not None:
                    raise InvalidPath(problem)
        if self.query is not None:
            query = self.query.apply(query, request)
            mark = "?" if query else ""
        upstream.target = f"{path}{mark}{query}"


class TransformResponse(_Compiled):
    """Only the response side is configured."""

    def on_response(self, request: Request, response: ResponseHead) -> None:
        if self.statuses and response.from_backend:
            mapped = self.statuses.get(response.status)
            if mapped is not None:
                status, phrase, problem = mapped
                if problem is not None:
                    raise problem(f"the backend answered {response.status}")
                response.status = status
                response.reason = phrase
        ops = self.response_headers
        if ops is not None:
            response.headers = ops.apply(response.headers, request)


class Transform(TransformRequest, TransformResponse):
    """Both sides are configured."""


class TransformJsonBody(TransformRequest):
    """The request's JSON body is edited: the body is read whole (``needs_body``), and
    a JSON body over ``max_bytes`` is refused with 413 before it is read."""

    needs_body = True

    def on_headers(self, request: Request) -> None:
        assert self.json_body is not None
        if _is_json(request.headers.get("Content-Type", "")):
            request.limit_body(self.json_body.max_bytes)

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        super().before_upstream(request, upstream)
        body = self.json_body
        assert body is not None
        if isinstance(upstream.body, bytes) and _is_json(request.headers.get("Content-Type", "")):
            upstream.body = body.apply(upstream.body, request)


class TransformJsonBodyAndResponse(TransformJsonBody, TransformResponse):
    """A JSON body edit and the response side."""


def transform_policy(config: TransformConfig) -> Policy:
    """The policy for ``config``, declaring only the phases it has work in (the chain
    skips the others at no cost)."""
    request, response = config.request, config.response
    changes_request = request is not None and (
        request.headers is not None or request.query is not None or request.path is not None
    )
    changes_response = response is not None and (
        response.headers is not None or bool(response.status)
    )
    if request is not None and request.json_body is not None:
        if changes_response:
            return TransformJsonBodyAndResponse(config)
        return TransformJsonBody(config)
    if changes_request and changes_response:
        return Transform(config)
    if changes_response:
        return TransformResponse(config)
    return TransformRequest(config)
