"""`KairosClient`: one async method per management API endpoint.

The client is the policy half of the SDK: it builds URLs (route paths percent-encoded
as one segment), adds the admin token, bounds every attempt with the timeout, retries
reads that could not reach the gateway, turns error answers into `ApiError`
subclasses and parses bodies into kairos-core models. Sending bytes is the transport's
job (`transport.Transport`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeVar
from urllib.parse import quote, urlencode

from kairos_core import (
    AuditPage,
    BackendList,
    ConfigError,
    ConfigStatus,
    ConfigVersions,
    CorsConfig,
    GatewayConfig,
    HealthStatus,
    JwtConfig,
    LiveStatus,
    MetricsHistory,
    MetricsSnapshot,
    PluginCatalog,
    Problem,
    RateLimitConfig,
    ReadyStatus,
    RollbackResult,
    RouteList,
    Router,
    ValidationResult,
    WhoAmI,
    load_config,
)
from kairos_core.ai import AiUsageReport
from kairos_core.auth import REDACTED_CONTEXT
from kairos_core.cache import CachePurged, CacheStatus
from pydantic import BaseModel, ValidationError
from yarl import URL

from ._version import __version__
from .errors import GatewayTimeout, GatewayUnavailable, InvalidResponse, error_for
from .events import EventStream
from .transport import AiohttpTransport, RawResponse, StreamingTransport, Transport

__all__ = [
    "DEFAULT_URL",
    "KairosClient",
    "RouteInput",
    "Versioned",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: Where the client looks when neither ``base_url`` nor ``KAIROS_GATEWAY_URL`` is set.
DEFAULT_URL: Final = "http://localhost:5900"
_READS: Final = frozenset({"GET", "HEAD"})
_BACKOFF_S: Final = 0.1
_MAX_BACKOFF_S: Final = 1.0
_JSON: Final = "application/json"
#: `_send`'s ``body`` when the request has none (``None`` is sent as JSON ``null``).
_NO_BODY: Final = object()

#: A route to send: a `Router`, or plain JSON data (validated by the gateway, which
#: answers 422 with field paths when it is invalid).
RouteInput = Router | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A result about the configuration, with the configuration version it came from.

    Send ``etag`` back as ``if_match=`` on a change to have it refused
    (`PreconditionFailed`) if someone else changed the configuration in between.
    """

    value: T
    etag: str | None


def _dump(value: BaseModel | Mapping[str, Any] | None) -> object:
    """JSON data for a request body: canonical names, None fields left out, and secrets
    as held (a ``"***"`` read from the gateway goes back as ``"***"``: "keep it")."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True})
    return None if value is None else dict(value)


def _duration(value: str | float | timedelta) -> str:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return value if isinstance(value, str) else f"{value:g}s"


def _problem(response: RawResponse) -> Problem:
    """The answer's problem document, or one made up from whatever the body holds."""
    try:
        return Problem.model_validate(json.loads(response.body))
    except (ValueError, ValidationError):
        pass
    try:
        title = HTTPStatus(response.status).phrase
    except ValueError:
        title = "Error"
    text = response.body.decode("utf-8", "replace").strip()
    return Problem(
        type="about:blank",
        title=title,
        status=response.status,
        detail=text[:200] or title,
        request_id=response.header("X-Request-ID") or "",
    )


def _json(response: RawResponse) -> Any:
    try:
        return json.loads(response.body)
    except ValueError as exc:
        raise InvalidResponse(f"the answer ({response.status}) is not JSON: {exc}") from exc


def _model(model: type[M], response: RawResponse, *, redacted: bool = False) -> M:
    context = {REDACTED_CONTEXT: True} if redacted else None
    try:
        return model.model_validate(_json(response), context=context)
    except (ValidationError, ConfigError) as exc:
        raise InvalidResponse(f"the answer is not a valid {model.__name__}: {exc}") from exc


def _section(model: type[M], response: RawResponse) -> M | None:
    return None if _json(response) is None else _model(model, response, redacted=True)


class KairosClient:
    """Async client for a Kairos gateway's management API.

    ``base_url`` defaults to ``KAIROS_GATEWAY_URL`` (else ``http://localhost:5900``),
    ``token`` to ``KAIROS_ADMIN_TOKEN``. ``timeout`` (seconds) bounds each attempt of
    each call. Reads that cannot reach the gateway are tried ``retries`` more times
    with a short backoff; writes are sent once. Use it as an async context manager::

        async with KairosClient() as client:
            routes = (await client.list_routes()).value.routes
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        transport: Transport | None = None,
        retries: int = 2,
    ) -> None:
        url = base_url or os.environ.get("KAIROS_GATEWAY_URL") or DEFAULT_URL
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host or parsed.query_string:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {url!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be more than 0 seconds, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.base_url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self._token = token if token is not None else os.environ.get("KAIROS_ADMIN_TOKEN") or None
        self._transport: Transport = transport if transport is not None else AiohttpTransport()

    def __repr__(self) -> str:
        auth = "token" if self._token else "no token"
        return f"<KairosClient {self.base_url} ({auth})>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the transport (and with it the aiohttp session)."""
        await self._transport.aclose()

    # -- sending -----------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | None] | None = None,
        body: object = _NO_BODY,
        if_match: str | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> RawResponse:
        """Send, retrying reads that got no answer; raise `ApiError` unless ``ok``."""
        url = self.base_url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urlencode(params, quote_via=quote)
        headers = {"Accept": _JSON, "User-Agent": f"kairos-client/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if if_match is not None:
            headers["If-Match"] = if_match
        data = None
        if body is not _NO_BODY:
            headers["Content-Type"] = _JSON
            data = json.dumps(body, separators=(",", ":")).encode()
        attempts = 1 + (self.retries if method in _READS else 0)
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._transport.send(method, url, headers, data)
            except GatewayTimeout:
                raise  # a slow gateway is not helped by asking again at once
            except TimeoutError as exc:
                raise GatewayTimeout(
                    f"{method} {self.base_url}{path}: no answer within {self.timeout:g}s"
                ) from exc
            except GatewayUnavailable:
                if attempt + 1 >= attempts:
                    raise
                await asyncio.sleep(min(_BACKOFF_S * 2**attempt, _MAX_BACKOFF_S))
                continue
            if response.status not in ok:
                raise error_for(response.status, _problem(response))
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _route_url(route: str) -> str:
        """``/api/routes/{route}``: a route id (its name, or derived id) or an
        ``external_path`` (it starts with ``/``), percent-encoded as one segment."""
        if not route:
            raise ValueError("a route is named by its id or its external_path, got ''")
        return "/api/routes/" + quote(route, safe="")

    # -- the gateway's own endpoints -----------------------------------------------------

    async def health(self) -> HealthStatus:
        """`GET /health`: version, uptime, config version, route count."""
        return _model(HealthStatus, await self._send("GET", "/health"))

    async def ready(self) -> ReadyStatus:
        """`GET /ready`: not an error when not ready; check ``.ready`` (or ``.status``)."""
        response = await self._send("GET", "/ready", ok=(200, 503))
        if response.status == 503 and "problem" in (response.header("Content-Type") or ""):
            raise error_for(503, _problem(response))
        return _model(ReadyStatus, response)

    async def live(self) -> LiveStatus:
        """`GET /live`: the process answers."""
        return _model(LiveStatus, await self._send("GET", "/live"))

    # -- routes --------------------------------------------------------------------------

    async def list_routes(self, *, tag: str | None = None) -> Versioned[RouteList]:
        """`GET /api/routes`: every route (with ``tag``, those carrying it), their ids
        and the config version."""
        response = await self._send("GET", "/api/routes", query={"tag": tag})
        return Versioned(_model(RouteList, response), response.header("ETag"))

    async def get_route(self, route: str, method: str | None = None) -> Versioned[Router]:
        """`GET /api/routes/{route}`: ``route`` is the route's id (its ``name``, else
        its derived id, `Router.id`) or its ``external_path`` (starting with ``/``).
        ``method`` picks one when several routes share the path (else `Conflict`).
        `NotFound` when there is none."""
        response = await self._send("GET", self._route_url(route), query={"method": method})
        return Versioned(_model(Router, response, redacted=True), response.header("ETag"))

    async def create_route(
        self, route: RouteInput, *, if_match: str | None = None
    ) -> Versioned[Router]:
        """`POST /api/routes`: live at once. `Conflict` if a route for the same path and
        one of the methods exists, `ValidationFailed` if invalid."""
        response = await self._send(
            "POST", "/api/routes", body=_dump(route), if_match=if_match, ok=(201,)
        )
        return Versioned(_model(Router, response, redacted=True), response.header("ETag"))

    async def update_route(
        self,
        ref: str,
        route: RouteInput,
        *,
        method: str | None = None,
        if_match: str | None = None,
    ) -> Versioned[Router]:
        """`PUT /api/routes/{ref}`: replace the route ``ref`` (an id or an external path,
        as in `get_route`); a different ``external_path`` or ``name`` in ``route``
        moves or renames it."""
        response = await self._send(
            "PUT",
            self._route_url(ref),
            query={"method": method},
            body=_dump(route),
            if_match=if_match,
        )
        return Versioned(_model(Router, response, redacted=True), response.header("ETag"))

    async def delete_route(
        self, route: str, *, method: str | None = None, if_match: str | None = None
    ) -> str | None:
        """`DELETE /api/routes/{route}` (an id or an external path, as in `get_route`);
        returns the configuration's new ETag."""
        response = await self._send(
            "DELETE",
            self._route_url(route),
            query={"method": method},
            if_match=if_match,
            ok=(204,),
        )
        return response.header("ETag")

    async def validate_route(self, route: RouteInput) -> ValidationResult:
        """`POST /api/routes/validate`: would `create_route` accept it? Nothing is saved."""
        response = await self._send("POST", "/api/routes/validate", body=_dump(route))
        return _model(ValidationResult, response)

    # -- configuration -------------------------------------------------------------------

    async def config_status(self) -> ConfigStatus:
        """`GET /api/config/status`: version, ETag, file, watcher, last reload."""
        return _model(ConfigStatus, await self._send("GET", "/api/config/status"))

    async def reload(self, *, if_match: str | None = None) -> ConfigStatus:
        """`POST /api/config/reload`: re-read the config file. `ValidationFailed` when the
        file is invalid (the running config keeps serving); `Conflict` without a file."""
        response = await self._send("POST", "/api/config/reload", if_match=if_match)
        return _model(ConfigStatus, response)

    async def get_config(self, *, secrets: str = "redacted") -> Versioned[GatewayConfig]:
        """`GET /api/config`: the whole configuration, every secret as ``"***"``.

        Parsed with ``load_config(data, redacted=True)``: a real `GatewayConfig` whose
        secrets are the placeholder; `replace_config` with it keeps the secrets.
        ``secrets="clear"`` asks for them in clear (`?secrets=clear`: the admin role
        only, else `Forbidden`; the gateway records the read in its audit trail).
        """
        if secrets not in ("redacted", "clear"):
            raise ValueError(f"secrets must be 'redacted' or 'clear', got {secrets!r}")
        query = {"secrets": "clear"} if secrets == "clear" else None
        response = await self._send("GET", "/api/config", query=query)
        try:
            config = load_config(_json(response), redacted=True)
        except ConfigError as exc:
            raise InvalidResponse(f"the answer is not a valid GatewayConfig: {exc}") from exc
        return Versioned(config, response.header("ETag"))

    async def replace_config(
        self, config: GatewayConfig | Mapping[str, Any], *, if_match: str | None = None
    ) -> Versioned[GatewayConfig]:
        """`PUT /api/config`: replace the whole configuration (``"***"`` secrets kept)."""
        response = await self._send("PUT", "/api/config", body=_dump(config), if_match=if_match)
        try:
            result = load_config(_json(response), redacted=True)
        except ConfigError as exc:
            raise InvalidResponse(f"the answer is not a valid GatewayConfig: {exc}") from exc
        return Versioned(result, response.header("ETag"))

    async def validate_config(self, config: GatewayConfig | Mapping[str, Any]) -> ValidationResult:
        """`POST /api/config/validate`: would `replace_config` accept it (``"***"``
        secrets standing for the live ones)? Nothing changes."""
        response = await self._send("POST", "/api/config/validate", body=_dump(config))
        return _model(ValidationResult, response)

    async def _get_section(self, name: str, model: type[M]) -> Versioned[M | None]:
        response = await self._send("GET", f"/api/config/{name}")
        return Versioned(_section(model, response), response.header("ETag"))

    async def _put_section(
        self,
        name: str,
        model: type[M],
        value: M | Mapping[str, Any] | None,
        if_match: str | None,
    ) -> Versioned[M | None]:
        response = await self._send(
            "PUT", f"/api/config/{name}", body=_dump(value), if_match=if_match
        )
        return Versioned(_section(model, response), response.header("ETag"))

    async def get_jwt_config(self) -> Versioned[JwtConfig | None]:
        """`GET /api/config/jwt` (None: no ``jwt`` section)."""
        return await self._get_section("jwt", JwtConfig)

    async def update_jwt_config(
        self, jwt: JwtConfig | Mapping[str, Any] | None, *, if_match: str | None = None
    ) -> Versioned[JwtConfig | None]:
        """`PUT /api/config/jwt`; None removes the section (and ``jwt_secret``)."""
        return await self._put_section("jwt", JwtConfig, jwt, if_match)

    async def get_rate_limit_config(self) -> Versioned[RateLimitConfig | None]:
        """`GET /api/config/rate_limit` (None: no gateway-wide limit)."""
        return await self._get_section("rate_limit", RateLimitConfig)

    async def update_rate_limit_config(
        self,
        rate_limit: RateLimitConfig | Mapping[str, Any] | None,
        *,
        if_match: str | None = None,
    ) -> Versioned[RateLimitConfig | None]:
        """`PUT /api/config/rate_limit`; None removes the section."""
        return await self._put_section("rate_limit", RateLimitConfig, rate_limit, if_match)

    async def get_cors_config(self) -> Versioned[CorsConfig | None]:
        """`GET /api/config/cors` (None: no gateway-wide CORS policy)."""
        return await self._get_section("cors", CorsConfig)

    async def update_cors_config(
        self, cors: CorsConfig | Mapping[str, Any] | None, *, if_match: str | None = None
    ) -> Versioned[CorsConfig | None]:
        """`PUT /api/config/cors`; None removes the section."""
        return await self._put_section("cors", CorsConfig, cors, if_match)

    # -- metrics, backends and plugins ---------------------------------------------------

    async def metrics(self) -> MetricsSnapshot:
        """`GET /api/metrics`: totals, rates, latency percentiles, per route and backend."""
        return _model(MetricsSnapshot, await self._send("GET", "/api/metrics"))

    async def metrics_history(
        self,
        range: str | float | timedelta = "1h",
        step: str | float | timedelta = "10s",
        *,
        route: str | None = None,
        backend: str | None = None,
    ) -> MetricsHistory:
        """`GET /api/metrics/history`: ``range`` (at most 24 h) and ``step`` (a multiple
        of 10 s) as ``"30s"``/``"5m"``/``"1h"``/``"1d"``, seconds, or a timedelta.

        With ``route`` (a route label: its template, e.g. ``"/api/users/{id}"``) or
        ``backend`` (an address, e.g. ``"http://10.0.0.5:8080"``), that one label's
        history, whose step is at least the gateway's per-label step (60 s by default;
        a finer ``step`` is rounded up). Raises `NotFound` for a label the gateway has
        never seen, `BadRequest` when both are given."""
        query = {
            "range": _duration(range),
            "step": _duration(step),
            "route": route,
            "backend": backend,
        }
        return _model(MetricsHistory, await self._send("GET", "/api/metrics/history", query=query))

    async def backends(self) -> BackendList:
        """`GET /api/backends`: per backend address, health, breaker, load and latency."""
        return _model(BackendList, await self._send("GET", "/api/backends"))

    async def plugins(self) -> PluginCatalog:
        """`GET /api/plugins`: the built-in policies and the installed plugins, highest
        priority first, and the entry points that failed to load (``.errors``)."""
        return _model(PluginCatalog, await self._send("GET", "/api/plugins"))

    async def cache_stats(self) -> CacheStatus:
        """`GET /api/cache`: each response cache store's figures (hits, misses, ...)."""
        return _model(CacheStatus, await self._send("GET", "/api/cache"))

    async def purge_cache(
        self, *, key: str | None = None, route: str | None = None, tag: str | None = None
    ) -> CachePurged:
        """`DELETE /api/cache`: remove cached responses by key, by route (its external
        path) or by tag; give exactly one. Returns how many entries went."""
        given = {"key": key, "route": route, "tag": tag}
        if sum(v is not None for v in given.values()) != 1:
            raise ValueError("give exactly one of key, route or tag")
        return _model(CachePurged, await self._send("DELETE", "/api/cache", query=given))

    async def ai_usage(self) -> AiUsageReport:
        """`GET /api/ai/usage`: the AI gateway's tokens, cost, errors and fallbacks per
        route, consumer, provider and model, the last hour by minute, and each target's
        breaker and latency (empty when no route uses the ai plugin)."""
        return _model(AiUsageReport, await self._send("GET", "/api/ai/usage"))

    async def audit(self, *, limit: int = 50, before: int | None = None) -> AuditPage:
        """`GET /api/audit`: configuration changes, newest first (actor, address,
        trigger, what changed); pass ``before=page.next`` for the following page."""
        query = {"limit": str(limit), "before": None if before is None else str(before)}
        return _model(AuditPage, await self._send("GET", "/api/audit", query=query))

    async def config_versions(self) -> ConfigVersions:
        """`GET /api/config/versions`: the configurations kept for `rollback`."""
        return _model(ConfigVersions, await self._send("GET", "/api/config/versions"))

    async def rollback(self, version: str, *, if_match: str | None = None) -> RollbackResult:
        """`POST /api/config/rollback`: make a kept version live again (saved like any
        change). `NotFound` for a version not kept; `PreconditionFailed` on a stale
        ``if_match``."""
        response = await self._send(
            "POST", "/api/config/rollback", body={"version": version}, if_match=if_match
        )
        return _model(RollbackResult, response)

    def events(
        self, *, last_event_id: str | None = None, read_timeout: float = 45.0
    ) -> EventStream:
        """`GET /api/events`: the gateway's live events, as an async iterator of
        `GatewayEvent` (see `kairos_client.events` for what ends it and how to resume)::

            async with client.events() as stream:
                async for event in stream:
                    ...

        Opening raises as any call does (`GatewayUnavailable`, `Unauthorized`, ...;
        503 `ServerError` when the gateway has all the streams it allows). It never
        reconnects by itself; ``last_event_id`` resumes after that event."""
        transport = self._transport
        if not isinstance(transport, StreamingTransport):
            raise TypeError(f"{type(transport).__name__} cannot stream: it has no stream()")
        if not read_timeout > 0:
            raise ValueError(f"read_timeout must be more than 0 seconds, got {read_timeout!r}")
        headers = {"Accept": "text/event-stream", "User-Agent": f"kairos-client/{__version__}"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return EventStream(
            transport,
            self.base_url + "/api/events",
            headers,
            open_timeout=self.timeout,
            read_timeout=read_timeout,
            problem=_problem,
            last_event_id=last_event_id,
        )

    async def whoami(self) -> WhoAmI:
        """`GET /api/whoami`: the name and role (viewer, operator, admin) of this
        client's token; `Unauthorized` when the gateway does not accept it."""
        return _model(WhoAmI, await self._send("GET", "/api/whoami"))

    async def openapi(self) -> dict[str, Any]:
        """`GET /api/openapi.json`: the API's OpenAPI 3.1 document (plain JSON data)."""
        document = _json(await self._send("GET", "/api/openapi.json"))
        if not isinstance(document, dict):
            raise InvalidResponse("the OpenAPI document is not a JSON object")
        return document
