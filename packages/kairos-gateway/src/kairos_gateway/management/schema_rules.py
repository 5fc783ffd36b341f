"""The validators' rules, written into the OpenAPI component schemas.

Pydantic's JSON schema carries the types and the numeric bounds of the config models,
but not the rules their validators enforce (path syntax, backend hosts, "exactly one
key source", a setting that needs another). `narrow` adds them, as patterns and as
``if``/``then`` and ``oneOf`` clauses, so that a request the document calls valid is
accepted and one it calls invalid is refused. Rules JSON Schema cannot state (no two
routes for the same path and method, placeholders of ``internal_path`` taken from
``external_path``, reserved gateway paths) are told in the descriptions; the API
answers 422 for them, which the document declares.

The patterns may be a little stricter than the validators (a path segment here never
starts with ``.`` and holds no ``%`` escape), never looser.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
#: A literal path segment: RFC 3986 pchar without '%', not starting with '.'.
_LITERAL = r"[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@-]*"
#: A route path: segments of literals and {name} placeholders, a {*tail} only last.
PATH = rf"^(/({_LITERAL}|\{{{_NAME}\}}))*/({_LITERAL}|\{{\*?{_NAME}\}})?$"
#: A backend host: scheme and host name, no port, path or user information.
HOST = r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$"
_HTTP_ONLY = r"^[hH][tT][tT][pP]://"
#: A CORS origin: scheme://host[:port] (host may start with '*.'), or '*'. (The
#: gateway takes a bracketed IPv6 literal too; the document leaves it out.)
ORIGIN = r"^(\*|https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?)$"
#: An HTTP header name (RFC 9110 token).
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
#: A rate-limit key: a built-in one or header:<name>.
RATE_KEY = r"^(ip|user|route|ip_route|user_route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"
#: The configuration's entity tag (`live.etag_of`): 20 hex digits of a hash, quoted.
ETAG = r'^"[0-9a-f]{20}"$'
_PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: A Redis URL: redis:// or rediss:// with an optional user and a port that parses,
#: or unix:// (no IPv6 literal here: the gateway takes a valid one too).
REDIS_URL = (
    rf"^(rediss?://([^\[\]/?#@]*@)?[^\[\]/?#@:]*(:{_PORT})?([/?#][^\[\]]*)?|unix://[^\[\]]*)$"
)
_NULL = {"type": "null"}


def _up_to(below: str, limit: str) -> str:
    """A number more than 0 and at most ``limit``: ``below`` matches 1 .. limit-1."""
    fraction = r"\.[0-9]+"
    alternatives = [r"0*\.[0-9]*[1-9][0-9]*", rf"0*{limit}(\.0+)?"]
    if below:
        alternatives.insert(0, rf"0*({below})({fraction})?")
    return "|".join(f"({a})" for a in alternatives)


_BELOW_86400 = "[1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}"
#: A history duration: more than 0 and at most 24 h, in s (the default unit), m, h or d.
DURATION = (
    "^("
    + "|".join(
        [
            f"({_up_to(_BELOW_86400, '86400')})s?",
            f"({_up_to('[1-9][0-9]{0,2}|1[0-3][0-9]{2}|14[0-3][0-9]', '1440')})m",
            f"({_up_to('[1-9]|1[0-9]|2[0-3]', '24')})h",
            f"({_up_to('', '1')})d",
        ]
    )
    + ")$"
)


def _string(pattern: str, *, nullable: bool = False) -> Schema:
    schema: Schema = {"type": "string", "pattern": pattern}
    return {"anyOf": [schema, _NULL]} if nullable else schema


def _set(schemas: dict[str, Schema], model: str, field: str, schema: Schema) -> None:
    prop = schemas[model]["properties"][field]
    keep = {k: v for k, v in prop.items() if k in ("title", "description", "default")}
    schemas[model]["properties"][field] = {**keep, **schema}


def _router(schemas: dict[str, Schema]) -> None:
    for field in ("external_path", "internal_path"):
        _set(schemas, "Router", field, _string(PATH))
    router = schemas["Router"]
    router["description"] = (
        (router.get("description") or "").rstrip()
        + "\n\nAlso refused with 422: an external_path under a reserved gateway path "
        "(/health, /ready, /live, /metrics, /api/routes, /api/config, /api/metrics), a "
        "placeholder used twice, an internal_path placeholder that external_path lacks, "
        "and two routes sharing a path and a method."
    ).strip()


def _backend(schemas: dict[str, Schema]) -> None:
    _set(schemas, "Backend", "host", _string(HOST))
    _set(schemas, "Backend", "health_check_path", _string("^/", nullable=True))
    plain_http = {
        "properties": {
            "tls_verify": {"const": True},
            "tls_ca_file": _NULL,
            "tls_cert_file": _NULL,
            "tls_key_file": _NULL,
        }
    }
    schemas["Backend"]["allOf"] = [
        {
            "if": {"properties": {"host": {"pattern": _HTTP_ONLY}}, "required": ["host"]},
            "then": plain_http,
        },
    ]


def _jwt(schemas: dict[str, Schema]) -> None:
    jwt = schemas["JwtConfig"]
    _set(schemas, "JwtConfig", "jwks_url", _string("^https?://", nullable=True))
    _set(schemas, "JwtConfig", "public_key", _string("-----BEGIN", nullable=True))
    hmac = {"enum": ["HS256", "HS384", "HS512"]}
    keys = ("secret", "public_key", "jwks_url")

    def source(name: str, algorithms: Schema) -> Schema:
        nulls = {k: _NULL for k in keys if k != name}
        return {
            "required": [name],
            "properties": {name: {"not": _NULL}, **nulls, "algorithms": {"items": algorithms}},
        }

    # Exactly one key source; HMAC algorithms with the secret, the others without it.
    jwt["oneOf"] = [
        source("secret", hmac),
        source("public_key", {"not": hmac}),
        source("jwks_url", {"not": hmac}),
    ]


def _cors(schemas: dict[str, Schema]) -> None:
    cors = schemas["CorsConfig"]["properties"]
    cors["allowed_origins"]["items"] = _string(ORIGIN)
    for field in ("allowed_headers", "exposed_headers"):
        cors[field]["items"] = _string(HEADER_NAME)
    cors["allowed_methods"]["items"] = _string(HEADER_NAME)
    # Browsers refuse '*' with credentials, and so does the gateway.
    schemas["CorsConfig"]["allOf"] = [
        {
            "if": {
                "properties": {"allow_credentials": {"const": True}},
                "required": ["allow_credentials"],
            },
            "then": {"properties": {"allowed_origins": {"items": {"not": {"const": "*"}}}}},
        }
    ]


def _rate_limit(schemas: dict[str, Schema]) -> None:
    rate = schemas["RateLimitConfig"]
    per_second = {
        "required": ["requests_per_second"],
        "properties": {
            "requests_per_second": {"not": _NULL},
            "requests_per_window": _NULL,
            "window_seconds": _NULL,
        },
    }
    windowed = {
        "required": ["requests_per_window", "window_seconds"],
        "properties": {
            "requests_per_second": _NULL,
            "requests_per_window": {"not": _NULL},
            "window_seconds": {"not": _NULL},
        },
    }
    rate["oneOf"] = [per_second, windowed]
    _set(schemas, "RateLimitConfig", "key", {"type": "string", "pattern": RATE_KEY})
    _set(schemas, "RateLimitConfig", "name", _string(r"^[A-Za-z0-9_.:/{}*-]{1,64}$", nullable=True))
    _set(schemas, "RateLimitConfig", "redis_url", _string(REDIS_URL, nullable=True))
    rate["allOf"] = [
        {
            "if": {"properties": {"sync": {"const": "batched"}}, "required": ["sync"]},
            "then": {
                "properties": {
                    "backend": {"const": "redis"},
                    "algorithm": {"enum": ["fixed_window", "token_bucket"]},
                },
                "required": ["backend"],
            },
        },
        {
            "if": {"properties": {"backend": {"const": "redis"}}, "required": ["backend"]},
            "then": {
                "properties": {"redis_url": _string(REDIS_URL)},
                "required": ["redis_url"],
            },
        },
    ]


def narrow(schemas: dict[str, Schema]) -> dict[str, Schema]:
    """A copy of pydantic's component ``schemas`` with the validators' rules added."""
    out = copy.deepcopy(schemas)
    for rule in (_router, _backend, _jwt, _cors, _rate_limit):
        rule(out)
    return out
