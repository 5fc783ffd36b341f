"""Settings of the ``transform`` plugin: request and response rewriting, and templates.

A value may hold templates, ``${variable}``, filled in per request:

    ${request_id}  ${client_ip}  ${method}  ${route}   the request, its route template
    ${path.NAME}   a path parameter of the route ({NAME})
    ${query.NAME}  a query parameter (first value; "" when absent)
    ${header.NAME} a request header (first value; "" when absent)
    ${claim.NAME}  a claim of the verified JWT ("" without one)
    ${env.NAME}    an environment variable, read once when the config is loaded

``$$`` is a literal ``$``. Unknown variables and malformed templates are refused when
the configuration is loaded, with the field path. Everything here is pure: the gateway
compiles the parsed templates once per snapshot (`kairos_gateway.policies.transform`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from pydantic import AfterValidator, Field, JsonValue, field_validator, model_validator

from ._model import KairosModel

__all__ = [
    "HeaderOps",
    "HeaderReplace",
    "JsonBodyOps",
    "PathRewrite",
    "QueryOps",
    "RequestTransform",
    "ResponseTransform",
    "StatusMapping",
    "TemplatePart",
    "TransformConfig",
    "from_kairos_rs",
    "parse_template",
]

#: Variables without a name part, and those that take one (``path.id``).
PLAIN_VARIABLES: Final = frozenset({"request_id", "client_ip", "method", "route"})
NAMED_VARIABLES: Final = frozenset({"path", "query", "header", "claim", "env"})

#: A literal (``kind`` "text", ``name`` the text) or a variable (``kind`` its kind).
TemplatePart = tuple[str, str]

_TEMPLATE = re.compile(r"\$\$|\$\{([^}]*)\}|\$")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_template(text: str) -> tuple[TemplatePart, ...]:
    """``text`` as literal and variable parts; raises `ValueError` naming the problem."""
    parts: list[TemplatePart] = []
    at = 0
    for found in _TEMPLATE.finditer(text):
        if found.start() > at:
            parts.append(("text", text[at : found.start()]))
        at = found.end()
        marker = found.group(0)
        if marker == "$$":
            parts.append(("text", "$"))
            continue
        if marker == "$":
            raise ValueError(
                f"'$' at {found.start()} starts no template: write ${{variable}}, or $$ for '$'"
            )
        variable = found.group(1).strip()
        kind, dot, name = variable.partition(".")
        if not dot and kind in PLAIN_VARIABLES:
            parts.append((kind, ""))
        elif dot and kind in NAMED_VARIABLES and _NAME.fullmatch(name):
            parts.append((kind, name))
        else:
            known = ", ".join(
                [*sorted(PLAIN_VARIABLES), *(f"{k}.NAME" for k in sorted(NAMED_VARIABLES))]
            )
            raise ValueError(f"unknown template variable ${{{variable}}} (known: {known})")
    if at < len(text):
        parts.append(("text", text[at:]))
    # Adjacent literals (around "$$") as one.
    merged: list[TemplatePart] = []
    for part in parts:
        if part[0] == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + part[1])
        else:
            merged.append(part)
    return tuple(merged)


def _template(value: str) -> str:
    parse_template(value)
    return value


def _header_name(value: str) -> str:
    if _TOKEN.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a valid header name")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


Template = Annotated[str, AfterValidator(_template)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
Regex = Annotated[str, AfterValidator(_regex)]
QueryName = Annotated[str, Field(min_length=1, max_length=256)]


class HeaderReplace(KairosModel):
    """Rewrite part of a header's value: ``pattern`` (a regex) -> ``replacement``
    (``\\1`` / ``\\g<name>`` for groups, templates allowed)."""

    name: HeaderName
    pattern: Regex
    replacement: Template


class HeaderOps(KairosModel):
    """Header changes, applied in this order: remove, rename, replace, set, add."""

    #: Header names to drop.
    remove: list[HeaderName] = Field(default_factory=list)
    #: Old name -> new name (every value of the old one moves).
    rename: dict[HeaderName, HeaderName] = Field(default_factory=dict)
    replace: list[HeaderReplace] = Field(default_factory=list)
    #: Name -> value, replacing any value the header had.
    set: dict[HeaderName, Template] = Field(default_factory=dict)
    #: Name -> value, added beside any value the header had.
    add: dict[HeaderName, Template] = Field(default_factory=dict)


class QueryOps(KairosModel):
    """Query parameter changes, applied in this order: remove, rename, set, add."""

    remove: list[QueryName] = Field(default_factory=list)
    rename: dict[QueryName, QueryName] = Field(default_factory=dict)
    set: dict[QueryName, Template] = Field(default_factory=dict)
    add: dict[QueryName, Template] = Field(default_factory=dict)


class PathRewrite(KairosModel):
    """The upstream path (the route's ``internal_path`` filled in), when it matches
    ``pattern`` as a whole, becomes ``replacement``: ``\\1`` / ``\\g<name>`` for the
    pattern's groups, templates for request values (percent-encoded). A path that does
    not match is left as it is. The result obeys the same rules as any path: no dot
    segment, no encoded slash hiding one (400 ``invalid_path``)."""

    pattern: Regex
    replacement: Template

    @model_validator(mode="after")
    def _groups_exist(self) -> PathRewrite:
        compiled = re.compile(self.pattern)
        for ref in re.findall(r"\\(\d+)|\\g<(\w+)>", self.replacement):
            number, name = ref
            if number and int(number) > compiled.groups:
                raise ValueError(
                    f"replacement uses group {number}; the pattern has {compiled.groups}"
                )
            if name and not name.isdigit() and name not in compiled.groupindex:
                raise ValueError(
                    f"replacement uses group {name!r}, which the pattern does not name"
                )
        if not self.replacement.startswith(("/", "\\", "$")):
            raise ValueError("replacement must give a path starting with '/'")
        return self


def _field_path(value: str) -> str:
    if not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", value):
        raise ValueError(f"{value!r} is not a field path such as 'user.email'")
    return value


FieldPathText = Annotated[str, AfterValidator(_field_path)]


class JsonBodyOps(KairosModel):
    """Fields of a JSON object body (``Content-Type: application/json`` or
    ``...+json``), by dotted path (``user.email``): ``remove`` them, then ``set`` them
    (strings may hold templates; missing objects on the way are created). The body is
    read whole, up to ``max_bytes`` (larger: 413)."""

    remove: list[FieldPathText] = Field(default_factory=list)
    set: dict[FieldPathText, JsonValue] = Field(default_factory=dict)
    max_bytes: Annotated[int, Field(ge=1, le=16 * 1024 * 1024)] = 64 * 1024

    @field_validator("set")
    @classmethod
    def _templates(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for item in value.values():
            if isinstance(item, str):
                parse_template(item)
        return value


class RequestTransform(KairosModel):
    headers: HeaderOps | None = None
    path: PathRewrite | None = None
    query: QueryOps | None = None
    #: Edits of a JSON request body; the only operation that reads the body whole.
    json_body: JsonBodyOps | None = None


class StatusMapping(KairosModel):
    """A backend status ``from`` sent to the client as ``to``; with ``problem: true``
    the gateway answers with its own problem+json body instead of the backend's."""

    from_: Annotated[int, Field(alias="from", ge=100, le=599)]
    to: Annotated[int, Field(ge=100, le=599)]
    problem: bool = False


class ResponseTransform(KairosModel):
    headers: HeaderOps | None = None
    status: list[StatusMapping] = Field(default_factory=list)

    @field_validator("status")
    @classmethod
    def _unique_from(cls, value: list[StatusMapping]) -> list[StatusMapping]:
        seen = [m.from_ for m in value]
        repeated = sorted({s for s in seen if seen.count(s) > 1})
        if repeated:
            raise ValueError(f"status {repeated[0]} is mapped twice")
        return value


class TransformConfig(KairosModel):
    """The ``transform`` plugin's ``config``."""

    request: RequestTransform | None = None
    response: ResponseTransform | None = None


# -- kairos-rs's shape --------------------------------------------------------------------

_RUST_GROUP = re.compile(r"\$(?:\{(\w+)\}|(\d+)|([A-Za-z_]\w*))|\$\$|\$")


def _literal(value: object, where: str) -> str:
    """A kairos-rs value (no templates there) as a template: ``$`` doubled."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string")
    return value.replace("$", "$$")


def _rust_replacement(value: object, where: str) -> str:
    """A Rust regex replacement (``$1``, ``${1}``, ``$name``, ``$$``) in Python's
    group syntax, other text literal."""
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string")

    def convert(found: re.Match[str]) -> str:
        group = found.group(1) or found.group(2) or found.group(3)
        if group is None:
            return "$$"  # "$$" or a lone "$": a literal dollar
        return f"\\{group}" if group.isdigit() else f"\\g<{group}>"

    return _RUST_GROUP.sub(convert, value.replace("\\", "\\\\"))


def _actions(items: object, where: str, allowed: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise ValueError(f"{where} must be a list")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{where}[{i}] must be an object")
        action = item.get("action")
        if action not in allowed:
            raise ValueError(f"{where}[{i}].action must be one of {', '.join(allowed)}")
        if not isinstance(item.get("name"), str):
            raise ValueError(f"{where}[{i}].name must be a string")
        out.append(item)
    return out


def _headers_from_rs(items: object, where: str) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for i, item in enumerate(_actions(items, where, ("add", "set", "remove", "replace"))):
        name, action, at = item["name"], item["action"], f"{where}[{i}]"
        if action == "remove":
            ops.setdefault("remove", []).append(name)
        elif action == "replace":
            ops.setdefault("replace", []).append(
                {
                    "name": name,
                    "pattern": item.get("pattern"),
                    "replacement": _rust_replacement(item.get("replacement", ""), at),
                }
            )
        else:
            ops.setdefault(action, {})[name] = _literal(item.get("value", ""), f"{at}.value")
    return ops


def from_kairos_rs(request: object, response: object) -> dict[str, Any]:
    """kairos-rs's ``request_transformation`` / ``response_transformation`` of a route
    as this plugin's ``config``. Raises `ValueError` naming the kairos-rs field."""
    config: dict[str, Any] = {}
    if request is not None:
        if not isinstance(request, dict):
            raise ValueError("request_transformation must be an object")
        unknown = set(request) - {"headers", "path", "query_params"}
        if unknown:
            raise ValueError(f"request_transformation.{sorted(unknown)[0]} is not known")
        side: dict[str, Any] = {}
        if request.get("headers"):
            side["headers"] = _headers_from_rs(request["headers"], "request_transformation.headers")
        path = request.get("path")
        if path is not None:
            if not isinstance(path, dict):
                raise ValueError("request_transformation.path must be an object")
            side["path"] = {
                "pattern": path.get("pattern"),
                "replacement": _rust_replacement(
                    path.get("replacement"), "request_transformation.path.replacement"
                ),
            }
        if request.get("query_params"):
            query: dict[str, Any] = {}
            where = "request_transformation.query_params"
            for i, item in enumerate(
                _actions(request["query_params"], where, ("add", "set", "remove"))
            ):
                if item["action"] == "remove":
                    query.setdefault("remove", []).append(item["name"])
                else:
                    value = _literal(item.get("value", ""), f"{where}[{i}].value")
                    query.setdefault(item["action"], {})[item["name"]] = value
            side["query"] = query
        config["request"] = side
    if response is not None:
        if not isinstance(response, dict):
            raise ValueError("response_transformation must be an object")
        unknown = set(response) - {"headers", "status_code_mappings"}
        if unknown:
            raise ValueError(f"response_transformation.{sorted(unknown)[0]} is not known")
        out: dict[str, Any] = {}
        if response.get("headers"):
            out["headers"] = _headers_from_rs(
                response["headers"], "response_transformation.headers"
            )
        mappings = response.get("status_code_mappings") or []
        if not isinstance(mappings, list):
            raise ValueError("response_transformation.status_code_mappings must be a list")
        for i, mapping in enumerate(mappings):
            if not isinstance(mapping, dict):
                raise ValueError(
                    f"response_transformation.status_code_mappings[{i}] must be an object"
                )
            if mapping.get("condition") is not None:
                raise ValueError(
                    f"response_transformation.status_code_mappings[{i}].condition is not "
                    "supported: map the status unconditionally, or leave the mapping out"
                )
            out.setdefault("status", []).append(
                {"from": mapping.get("from"), "to": mapping.get("to")}
            )
        config["response"] = out
    return config
