"""The OpenAPI 3.1 document of the management API (`GET /api/openapi.json`).

Schemas are generated from the pydantic models the API itself uses: the core config
models for request bodies (and for routes and configs in responses, which are valid
inputs by construction) and `kairos_core.api` for everything else.
"""

from __future__ import annotations

import functools
from typing import Any

from kairos_core import (
    HTTP_METHODS,
    AuditPage,
    BackendList,
    ConfigStatus,
    ConfigVersions,
    CorsConfig,
    GatewayConfig,
    JwtConfig,
    MetricsHistory,
    MetricsSnapshot,
    PluginCatalog,
    Problem,
    RateLimitConfig,
    RollbackResult,
    RouteList,
    Router,
    ValidationResult,
    WhoAmI,
)
from kairos_core.ai import AiUsageReport
from kairos_core.cache import CachePurged, CacheStatus
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import problems as problem_module
from .._version import __version__
from .schema_rules import DURATION, ETAG, narrow

_MODELS: tuple[type[BaseModel], ...] = (
    GatewayConfig,
    Router,
    JwtConfig,
    RateLimitConfig,
    CorsConfig,
    Problem,
    RouteList,
    ValidationResult,
    ConfigStatus,
    MetricsSnapshot,
    MetricsHistory,
    BackendList,
    PluginCatalog,
    ConfigVersions,
    RollbackResult,
    AuditPage,
    CacheStatus,
    CachePurged,
    AiUsageReport,
    WhoAmI,
)
_ERRORS = {
    400: "Malformed JSON or query parameter",
    401: "The admin token is missing or wrong",
    403: "The token's role is short of the one the call needs, or no admin token is "
    "configured and the caller is not on loopback",
    404: "No such route or endpoint",
    405: "Method not allowed (see Allow)",
    409: "Conflict: the route exists, several routes share the path, or the config "
    "file was changed on disk",
    412: "If-Match names a stale configuration version",
    413: "The body is larger than 1 MiB",
    415: "The body is not application/json",
    422: "The configuration or route is invalid; errors[] names each field",
    503: "The change could not be saved to the config file and was not applied",
}
_ALWAYS = (401, 403, 405)
_MUTATION = (400, 409, 412, 413, 415, 422, 503)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    errors: tuple[int, ...] = (),
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    etag: bool = False,
    operation_id: str | None = None,
    links: dict[str, Any] | None = None,
    example: object = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, response in ok.items():
        if links:
            response = {**response, "links": links}
        if etag:
            response = {
                **response,
                "headers": {
                    "ETag": {
                        "description": "The configuration version: a hash of the "
                        "redacted configuration, quoted",
                        "schema": {"type": "string", "pattern": ETAG},
                    }
                },
            }
        responses[status] = response
    for code in sorted({*_ALWAYS, *errors}):
        responses[str(code)] = {
            "description": _ERRORS[code],
            "content": {problem_module.CONTENT_TYPE: {"schema": _ref(Problem)}},
        }
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if operation_id is not None:
        operation["operationId"] = operation_id
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if example is not None:
            media["example"] = example
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    if params:
        operation["parameters"] = params
    return operation


#: ``key=``, ``route=`` or ``tag=``: exactly one, as one form-exploded object parameter.
_CACHE_SELECTOR = {
    "name": "selector",
    "in": "query",
    "required": True,
    "style": "form",
    "explode": True,
    "description": "Exactly one of: key (one cache key), route (a route template's "
    "entries, percent-encoded), tag (the entries carrying a tag)",
    "schema": {
        "type": "object",
        "properties": {
            name: {"type": "string", "minLength": 1} for name in ("key", "route", "tag")
        },
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
    },
}
_AUDIT_PARAMS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Entries per page (default 50)",
        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
    },
    {
        "name": "before",
        "in": "query",
        "required": False,
        "description": "The next page: the `next` of the previous one",
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**62},
    },
]

#: Request examples: valid, and what the docs show.
_ROUTE_EXAMPLE = {
    "external_path": "/api/users/{id}",
    "internal_path": "/users/{id}",
    "methods": ["GET"],
    "backends": [{"host": "http://users", "port": 8080}],
}
_SECTION_EXAMPLES: dict[str, object] = {
    "jwt": {
        "public_key": "-----BEGIN PUBLIC KEY-----\n"
        "MCowBQYDK2VwAyEArwPf5GQatWJy0+bpQQSttjBe3DvzRigDDRCAlr22meQ=\n"
        "-----END PUBLIC KEY-----\n",
        "algorithms": ["EdDSA"],
    },
    "rate_limit": {"requests_per_second": 100, "burst_size": 200},
    "cors": {"allowed_origins": ["https://app.example.com"]},
}

_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "Apply only if the configuration is still at this ETag (else 412)",
    "schema": {"type": "string"},
}
_ROUTE_REF = {
    "name": "route",
    "in": "path",
    "required": True,
    "description": "The route's id (its name, else its derived id r-<12 hex digits>) or "
    "its external_path, percent-encoded: %2Fapi%2Fusers%2F%7Bid%7D. A value starting "
    "with / is a path; an id never does",
    "schema": {"type": "string"},
    "example": "/api/users/{id}",
}
_TAG = {
    "name": "tag",
    "in": "query",
    "required": False,
    "description": "Only the routes carrying this tag",
    "schema": {"type": "string"},
}
_SECRETS = {
    "name": "secrets",
    "in": "query",
    "required": False,
    "description": "redacted (the default): every secret as '***'; clear: in clear "
    "(admin role only; logged and recorded in the audit trail)",
    "schema": {"type": "string", "enum": ["redacted", "clear"]},
}
_METHOD = {
    "name": "method",
    "in": "query",
    "required": False,
    "description": "When several routes share the path: the one serving this method",
    "schema": {"type": "string", "enum": list(HTTP_METHODS)},
}
_DURATION = {"type": "string", "pattern": DURATION}
#: ``route=`` or ``backend=`` (not both): one form-exploded object parameter says so.
_HISTORY_LABEL = {
    "name": "label",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "At most one of: route, one route label's history (its template, "
    "percent-encoded: %2Fapi%2Fusers%2F%7Bid%7D); backend, one backend address's history "
    "(percent-encoded: http%3A%2F%2F10.0.0.5%3A8080). 404 for a label never seen",
    "schema": {
        "type": "object",
        "properties": {
            "route": {"type": "string", "minLength": 1},
            "backend": {"type": "string", "minLength": 1},
        },
        "additionalProperties": False,
        "maxProperties": 1,
    },
}


#: A created or replaced route, followed to the operations on it (stateful clients
#: and schemathesis' stateful phase use these).
_ROUTE_LINKS = {
    name: {
        "operationId": operation_id,
        "parameters": {"route": "$response.body#/external_path"},
    }
    for name, operation_id in (
        ("GetRoute", "getRoute"),
        ("ReplaceRoute", "replaceRoute"),
        ("DeleteRoute", "deleteRoute"),
    )
}


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event (its `id`); when the events after it are no "
    "longer kept (or it names another process's stream) a `reset` event comes first",
    "schema": {"type": "string"},
}


def _events_operation() -> dict[str, Any]:
    """``GET /api/events``: a stream that stays open, so its body is described in words
    (docs/admin-api.md lists the event types and their data)."""
    operation = _op(
        "Live events as Server-Sent Events (text/event-stream): config.applied, "
        "config.reload_failed, config.reload_recovered, backend.health, backend.breaker, "
        "backend.ejection, a metrics tick every second; lagged and reset for the "
        "subscriber alone. The stream stays open until the gateway shuts down",
        {
            "200": {
                "description": "An open stream of `id:`/`event:`/`data:` messages (data "
                "is one line of JSON with an `at` timestamp) and `: keep-alive` comments",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
        params=[_LAST_EVENT_ID],
    )
    operation["responses"]["503"] = {
        "description": "As many event streams are open as the gateway allows (100), or "
        "it is shutting down; see Retry-After",
        "content": {problem_module.CONTENT_TYPE: {"schema": _ref(Problem)}},
    }
    return operation


def _in_cluster_redis(operation: dict[str, Any]) -> dict[str, Any]:
    """``operation`` reading the audit trail, which a cluster node reads from Redis."""
    operation["responses"]["503"] = {
        "description": "A cluster node's Redis, where the cluster keeps its audit trail "
        "and versions, cannot be reached",
        "content": {problem_module.CONTENT_TYPE: {"schema": _ref(Problem)}},
    }
    return operation


def _section_paths() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, model in (("jwt", JwtConfig), ("rate_limit", RateLimitConfig), ("cors", CorsConfig)):
        schema = {"anyOf": [_ref(model), {"type": "null"}]}
        out[f"/api/config/{name}"] = {
            "get": _op(f"The {name} section (null when absent)", {"200": _json(schema, "ok")}),
            "put": _op(
                f"Replace the {name} section (null removes it); '***' keeps a secret",
                {"200": _json(schema, "Applied and saved")},
                errors=_MUTATION,
                body=schema,
                params=[_IF_MATCH],
                etag=True,
                example=_SECTION_EXAMPLES[name],
            ),
        }
    return out


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    route = _ref(Router)
    config = _ref(GatewayConfig)
    paths: dict[str, Any] = {
        "/api/routes": {
            "get": _op(
                "List the routes (with ?tag=T, those carrying tag T), and their ids",
                {"200": _json(_ref(RouteList), "ok")},
                params=[_TAG],
                etag=True,
            ),
            "post": _op(
                "Create a route (live at once, saved to the config file)",
                {"201": _json(route, "Created; Location names the new route")},
                errors=_MUTATION,
                body=route,
                params=[_IF_MATCH],
                etag=True,
                example=_ROUTE_EXAMPLE,
                operation_id="createRoute",
                links=_ROUTE_LINKS,
            ),
        },
        "/api/routes/validate": {
            "post": _op(
                "Check a route without saving it; always 200",
                {"200": _json(_ref(ValidationResult), "valid, and errors with field paths")},
                errors=(413, 415),
                body={},
                example=_ROUTE_EXAMPLE,
            ),
        },
        "/api/routes/{route}": {
            "parameters": [_ROUTE_REF, _METHOD],
            "get": _op(
                "One route",
                {"200": _json(route, "ok")},
                errors=(404, 409),
                etag=True,
                operation_id="getRoute",
            ),
            "put": _op(
                "Replace a route",
                {"200": _json(route, "Replaced")},
                errors=(404, *_MUTATION),
                body=route,
                params=[_IF_MATCH],
                etag=True,
                example=_ROUTE_EXAMPLE,
                operation_id="replaceRoute",
                links=_ROUTE_LINKS,
            ),
            "delete": _op(
                "Delete a route",
                {"204": {"description": "Deleted"}},
                errors=(404, 409, 412, 503),
                params=[_IF_MATCH],
                etag=True,
                operation_id="deleteRoute",
            ),
        },
        "/api/config": {
            "get": _op(
                "The whole configuration, secrets as '***' (or in clear: ?secrets=clear, "
                "admin role)",
                {"200": _json(config, "ok")},
                errors=(400,),
                params=[_SECRETS],
                etag=True,
            ),
            "put": _op(
                "Replace the whole configuration; '***' keeps a secret",
                {"200": _json(config, "Applied and saved")},
                errors=_MUTATION,
                body=config,
                params=[_IF_MATCH],
                etag=True,
                example={"version": 1, "routers": [_ROUTE_EXAMPLE]},
            ),
        },
        **_section_paths(),
        "/api/config/status": {
            "get": _op(
                "Config version, file, watcher and last reload",
                {"200": _json(_ref(ConfigStatus), "ok")},
                etag=True,
            ),
        },
        "/api/config/reload": {
            "post": _op(
                "Re-read the config file and apply it; an invalid file is refused (422) "
                "and the running configuration keeps serving",
                {"200": _json(_ref(ConfigStatus), "Reloaded")},
                errors=(409, 412, 413, 422),
                params=[_IF_MATCH],
                etag=True,
            ),
        },
        "/api/config/validate": {
            "post": _op(
                "Check a whole configuration without applying it (as PUT /api/config "
                "would: '***' keeps a secret); always 200",
                {"200": _json(_ref(ValidationResult), "valid, and errors with field paths")},
                errors=(413, 415),
                body={},
                example={"version": 1, "routers": [_ROUTE_EXAMPLE]},
            ),
        },
        "/api/config/versions": {
            "get": _in_cluster_redis(
                _op(
                    "The configuration versions kept for rollback, newest first",
                    {"200": _json(_ref(ConfigVersions), "ok")},
                )
            ),
        },
        "/api/config/rollback": {
            "post": _op(
                "Make a kept version live again (saved like any change; recorded as a "
                "rollback); 404 for a version not kept",
                {"200": _json(_ref(RollbackResult), "Rolled back")},
                errors=(400, 404, 409, 412, 413, 415, 422, 503),
                body={
                    "type": "object",
                    "properties": {"version": {"type": "string", "minLength": 1}},
                    "required": ["version"],
                },
                params=[_IF_MATCH],
                etag=True,
            ),
        },
        "/api/audit": {
            "get": _in_cluster_redis(
                _op(
                    "The audit trail: who changed what, newest first, in pages",
                    {"200": _json(_ref(AuditPage), "ok")},
                    errors=(400,),
                    params=_AUDIT_PARAMS,
                )
            ),
        },
        "/api/ai/usage": {
            "get": _op(
                "AI gateway usage: tokens, cost, errors and fallbacks per route, consumer, "
                "provider and model; the last hour by minute; each target's breaker",
                {"200": _json(_ref(AiUsageReport), "ok")},
            ),
        },
        "/api/cache": {
            "get": _op(
                "The response cache's stores and counters", {"200": _json(_ref(CacheStatus), "ok")}
            ),
            "delete": _op(
                "Purge cache entries by key, route or tag from every store in use",
                {"200": _json(_ref(CachePurged), "Purged")},
                errors=(400, 503),
                params=[_CACHE_SELECTOR],
            ),
        },
        "/api/metrics": {
            "get": _op("Metrics snapshot for the UI", {"200": _json(_ref(MetricsSnapshot), "ok")}),
        },
        "/api/metrics/history": {
            "get": _op(
                "Time series from the in-memory history (24 h kept): the gateway's totals, "
                "or one route's or one backend's (steps of 60 s by default)",
                {"200": _json(_ref(MetricsHistory), "ok")},
                errors=(400, 404),
                params=[
                    {"name": "range", "in": "query", "required": False, "schema": _DURATION},
                    {"name": "step", "in": "query", "required": False, "schema": _DURATION},
                    _HISTORY_LABEL,
                ],
            ),
        },
        "/api/backends": {
            "get": _op("Backend health and breakers", {"200": _json(_ref(BackendList), "ok")}),
        },
        "/api/plugins": {
            "get": _op(
                "Built-in policies and installed plugins (entry points), highest priority "
                "first, with the entry points that failed to load",
                {"200": _json(_ref(PluginCatalog), "ok")},
            ),
        },
        "/api/events": {"get": _events_operation()},
        "/api/whoami": {
            "get": _op(
                "The calling token's name and role (viewer, operator or admin); without "
                "any token configured, a loopback caller is 'loopback' with the admin role",
                {"200": _json(_ref(WhoAmI), "ok")},
            ),
        },
        "/api/openapi.json": {
            "get": _op("This document", {"200": _json({"type": "object"}, "ok")}),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kairos management API",
            "version": __version__,
            "description": "Routes and configuration of a running Kairos gateway, live. "
            "See docs/admin-api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": narrow(top.get("$defs", {})),
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminToken": []}, {}],
    }
