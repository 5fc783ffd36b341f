"""``add-headers``: set, add or remove headers on the request to the backend and on the
response to the client.

``request`` edits run in ``before_upstream``, ``response`` edits in ``on_response``
(so they apply to the gateway's own answers too: a 401, a 502). Each side takes::

    {"set": {"X-Name": "value"}, "add": {"X-Name": "value"}, "remove": ["X-Name"]}

``remove`` drops every header of a name, ``set`` replaces them with one, ``add`` appends
one and keeps the others. Values may hold placeholders, filled per request:
``{request_id}``, ``{client_ip}`` and ``{route}`` (the route's ``external_path``);
``{{`` and ``}}`` are literal braces. Anything else in braces is refused when the
configuration is loaded, as are headers the gateway owns (framing, hop-by-hop, Host,
X-Request-Id) and a name edited twice on one side.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final

from kairos_gateway import Plugin, Policy, Request, ResponseHead, UpstreamRequest
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = ["PLACEHOLDERS", "AddHeaders", "AddHeadersConfig", "HeaderEdits", "plugin"]

#: What each placeholder is replaced with.
PLACEHOLDERS: Final[Mapping[str, Callable[[Request], str]]] = {
    "request_id": lambda request: request.request_id,
    "client_ip": lambda request: request.client_ip,
    "route": lambda request: request.route.template if request.route is not None else "",
}
_KNOWN: Final = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")  # an HTTP field name (RFC 9110)
#: Visible ASCII, spaces and tabs, not at either end (RFC 9110 field-value, ASCII only).
_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?")
_MAX_VALUE = 4096
#: Headers the gateway owns, and why a plugin may not edit them.
_OWNED: Final = {
    "host": "the gateway sets Host (see the route's preserve_host)",
    "content-length": "the gateway frames the message",
    "transfer-encoding": "the gateway frames the message",
    "connection": "hop-by-hop headers belong to each connection",
    "keep-alive": "hop-by-hop headers belong to each connection",
    "proxy-connection": "hop-by-hop headers belong to each connection",
    "te": "hop-by-hop headers belong to each connection",
    "trailer": "hop-by-hop headers belong to each connection",
    "upgrade": "hop-by-hop headers belong to each connection",
    "x-request-id": "the gateway sets X-Request-Id",
}


def _header_name(name: str) -> str:
    if not _TOKEN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a header name (1 to 128 letters, digits or !#$%&'*+-.^_`|~)"
        )
    reason = _OWNED.get(name.lower())
    if reason is not None:
        raise ValueError(f"{name} cannot be edited: {reason}")
    return name


def _pieces(template: str) -> tuple[tuple[str, str | None], ...]:
    """``template`` as (literal text, placeholder or None) pairs; `ValueError` names
    an unknown placeholder or a lone brace."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '}' encountered in format string"
        raise ValueError(f"{exc}: write {{{{ and }}}} for literal braces") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}}: use {_KNOWN}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
        out.append((literal, name))
    return tuple(out)


def _header_value(value: str) -> str:
    if len(value) > _MAX_VALUE:
        raise ValueError(f"a header value is at most {_MAX_VALUE} characters")
    if not _VALUE.fullmatch(value):
        raise ValueError(
            "a header value is printable ASCII, without control characters or spaces at either end"
        )
    _pieces(value)
    return value


HeaderValue = Annotated[str, AfterValidator(_header_value)]


class HeaderEdits(BaseModel):
    """The edits of one side: ``remove`` first, then ``set``, then ``add``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: Annotated[dict[str, HeaderValue], Field(max_length=64)] = {}
    add: Annotated[dict[str, HeaderValue], Field(max_length=64)] = {}
    remove: Annotated[list[str], Field(max_length=64)] = []

    @field_validator("set", "add", "remove", mode="before")
    @classmethod
    def _names(cls, names: object) -> object:
        # Here rather than on the dict keys, so an error's path ends in set/add/remove
        # (pydantic would add a "[key]" step); before the values, so a bad name is
        # reported even when a value is bad too.
        if isinstance(names, dict | list):
            for name in names:
                if isinstance(name, str):
                    _header_name(name)
        return names

    @model_validator(mode="after")
    def _each_name_once(self) -> HeaderEdits:
        seen: dict[str, str] = {}
        for kind, names in (("set", self.set), ("add", self.add), ("remove", self.remove)):
            for name in names:
                first = seen.get(name.lower())
                if first is not None:
                    where = f"twice in {kind}" if first == kind else f"in both {first} and {kind}"
                    raise ValueError(f"{name} is {where} (header names ignore case): edit it once")
                seen[name.lower()] = kind
        return self

    @property
    def empty(self) -> bool:
        return not (self.set or self.add or self.remove)


class AddHeadersConfig(BaseModel):
    """``plugins[].config`` of ``add-headers``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Edits of the request sent to the backend.
    request: HeaderEdits = HeaderEdits()
    #: Edits of the response sent to the client.
    response: HeaderEdits = HeaderEdits()

    @model_validator(mode="after")
    def _something_to_do(self) -> AddHeadersConfig:
        if self.request.empty and self.response.empty:
            raise ValueError("nothing to do: give request or response edits")
        return self


@dataclass(frozen=True, slots=True)
class _Template:
    pieces: tuple[tuple[str, str | None], ...]

    def render(self, request: Request) -> str:
        return "".join(
            literal if name is None else literal + PLACEHOLDERS[name](request)
            for literal, name in self.pieces
        )


@dataclass(frozen=True, slots=True)
class _Edits:
    """One side's edits, compiled: the names to drop, then the headers to append."""

    drop: frozenset[str]
    append: tuple[tuple[str, _Template], ...]

    @classmethod
    def of(cls, edits: HeaderEdits) -> _Edits | None:
        if edits.empty:
            return None
        return cls(
            frozenset(n.lower() for n in [*edits.remove, *edits.set]),
            tuple(
                (name, _Template(_pieces(value)))
                for name, value in [*edits.set.items(), *edits.add.items()]
            ),
        )

    def apply(self, headers: Sequence[tuple[str, str]], request: Request) -> list[tuple[str, str]]:
        drop = self.drop
        out = [(k, v) for k, v in headers if k.lower() not in drop] if drop else list(headers)
        out += [(name, template.render(request)) for name, template in self.append]
        return out


class AddHeaders(Policy):
    __slots__ = ("_request", "_response")

    def __init__(self, settings: AddHeadersConfig) -> None:
        self._request = _Edits.of(settings.request)
        self._response = _Edits.of(settings.response)

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        if self._request is not None:
            upstream.headers = self._request.apply(upstream.headers, request)

    def on_response(self, request: Request, response: ResponseHead) -> None:
        if self._response is not None:
            response.headers = self._response.apply(response.headers, request)


plugin: Final = Plugin(
    name="add-headers",
    config=AddHeadersConfig,
    policy=AddHeaders,
    description="set, add or remove request and response headers, with placeholders",
)
