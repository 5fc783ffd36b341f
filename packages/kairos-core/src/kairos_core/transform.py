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
from typing import Annotated, Final

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
