"""Dispatch of management API calls to their handlers, and the API's background work.

`ManagementApi.handle` authorizes every call (`access`), then dispatches on the path:

    /api/routes                 GET list, POST create           (routes)
    /api/routes/validate        POST                            (routes)
    /api/routes/{id or path}    GET, PUT, DELETE                (routes)
    /api/config                 GET, PUT                        (config_api)
    /api/config/status          GET                             (config_api)
    /api/config/reload          POST                            (config_api)
    /api/config/validate        POST                            (config_api)
    /api/config/{section}       GET, PUT (jwt, rate_limit, cors)
    /api/metrics                GET snapshot                    (history)
    /api/metrics/history        GET ?range=1h&step=10s          (history)
                                    [&route=<label> | &backend=<address>]
    /api/backends               GET
    /api/plugins                GET (built-in policies, installed plugins)
    /api/events                 GET Server-Sent Events          (events_api, feed)
    /api/openapi.json           GET                             (openapi)
    /api/whoami                 GET the caller's token name and role

It is given what it works with (the runtime, `LiveConfig`, the metrics sampler, the
file watcher, the cluster node and the event bus, built by the app). `start()` begins
the metrics sampler, the event feed's tick and, when the config has ``hot_reload`` on
and came from a file, the file watcher; `close()` stops them. A cluster node runs no
file watcher: its configuration comes from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from kairos_core import (
    AdminConfig,
    AuditPage,
    BackendList,
    BadRequest,
    ConfigVersions,
    KairosError,
    MethodNotAllowed,
    MetricsHistory,
    MetricsSnapshot,
    RollbackResult,
    RouteNotFound,
    ServiceUnavailable,
    WhoAmI,
)
from kairos_core.ai import AiUsageReport

from ..ai import usage_report
from ..cache.workers import WorkerPurges
from ..cluster.base import StoreUnavailable
from ..events import EventBus
from ..messages import ApiRequest, ApiResponse, StreamedResponse
from ..settings import NamedToken
from . import cache_api, config_api, events_api, routes
from .access import AdminCredential, authorize, credentials, needed_role
from .audit import AuditTrail
from .feed import EventFeed
from .history import MetricsSampler
from .live import ACTOR, Actor, LiveConfig, Trigger, acting, etag_of
from .openapi import openapi_document
from .schema_rules import DURATION
from .watcher import FileWatcher

if TYPE_CHECKING:
    from ..cluster.node import ClusterNode
    from ..messages import OpsHandler
    from ..outlier import Outlier
    from ..runtime import Runtime
    from ..snapshot import Snapshot
    from ..upstream import EndpointStats

log = logging.getLogger("kairos.gateway")

_READ = ("GET", "HEAD")
#: Longest history a request may ask for, and the duration units it may use.
MAX_RANGE_S = 86_400.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _bare_etag(etag: str) -> str:
    return etag.removeprefix("W/").strip('"')


def _allow(request: ApiRequest, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if request.method not in allowed:
        raise MethodNotAllowed(f"{request.method} is not allowed here", allow=allowed)
    return request.method


def _connections(stats: EndpointStats | None) -> dict[str, int] | None:
    """The ``connections`` block of a backend (None: no request has reached it yet)."""
    if stats is None:
        return None
    return {
        "open": stats.open,
        "idle": stats.idle,
        "busy": stats.busy,
        "pending": stats.pending,
        "max_connections": stats.max_connections,
        "max_pending": stats.max_pending,
        "opened_total": stats.opened_total,
        "saturated_total": stats.saturated_total,
    }


def _ejection(outlier: Outlier, now: float, wall: float) -> dict[str, object]:
    """The ``ejection`` block of a backend; ``now`` monotonic, ``wall`` epoch seconds."""

    def iso_ms(at: float) -> str | None:
        if not at:
            return None
        epoch = wall - (now - at)
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
        return f"{whole}.{int(epoch % 1 * 1000):03d}Z"

    return {
        "ejected": outlier.ejected(),
        "reason": outlier.reason,
        "since": iso_ms(outlier.since),
        "until": iso_ms(outlier.until),
        "remaining_s": round(outlier.remaining_s(), 3),
        "probation": outlier.on_probation(),
        "count": outlier.stats.ejections,
    }


def _count(name: str, text: str, least: int, most: int) -> int:
    """A whole number parameter within bounds; 400 otherwise."""
    if not text.isdigit() or not least <= int(text) <= most:
        raise BadRequest(f"{name}={text!r} must be a whole number from {least} to {most}")
    return int(text)


def parse_duration(name: str, text: str) -> float:
    """``"10s"``, ``"5m"``, ``"1h"``, ``"1d"`` (or plain seconds) to seconds; 400 if bad
    (the document's pattern, `DURATION`, states the same rule)."""
    if not re.fullmatch(DURATION, text):
        raise BadRequest(
            f"{name}={text!r} must be a duration more than 0 and at most 24h, "
            "such as 30s, 5m, 1h or 1d"
        )
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a duration such as 30s, 5m, 1h or 1d") from None
    if not value > 0 or value > MAX_RANGE_S:
        raise BadRequest(f"{name}={text!r} must be more than 0 and at most 24h")
    return value


class ManagementApi:
    def __init__(
        self,
        runtime: Runtime,
        live: LiveConfig,
        *,
        sampler: MetricsSampler,
        admin_token: str | None = None,
        admin_tokens: tuple[NamedToken, ...] = (),
        cluster: ClusterNode | None = None,
        watcher: FileWatcher | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.runtime = runtime
        self.live = live
        self.sampler = sampler
        self.cluster = cluster
        self.watcher = watcher
        audit = runtime.snapshot.config.admin.audit
        file = live.file
        #: Who changed what, and the versions kept for rollback (set up at start-up).
        self.audit = AuditTrail(
            runtime.snapshot,
            etag_of,
            directory=None if file is None else file.path.parent / audit.dir,
            keep_entries=audit.keep_entries,
            keep_versions=audit.keep_versions,
            shared=cluster is not None,  # the cluster's trail, in its Redis
        )
        #: The live events (`GET /api/events`) and what publishes them.
        self.events = events if events is not None else EventBus()
        self.feed = EventFeed(self.events, runtime, sampler)
        live.reload_listener = self.feed.reload_recorded
        runtime.registry.listener = self.feed
        #: Seconds between two keep-alive comments on an idle event stream.
        self.heartbeat_s = events_api.HEARTBEAT_S
        self._admin_token = admin_token
        self._admin_tokens = admin_tokens
        self._started = False
        #: Connections accepted by the admin listener (see `serves`).
        self._credentials: tuple[AdminConfig, tuple[AdminCredential, ...]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: With ``--workers N``: the purge journal shared with the other workers (set
        #: by the worker's start-up, see `cache.workers`).
        self.cache_workers: WorkerPurges | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start background work (file watcher, metrics sampler); called by Gateway.start."""
        self._started = True
        required = self.credentials()
        if not required:
            log.info(
                "no admin token is set (KAIROS_ADMIN_TOKEN, admin.token or "
                "admin.token_sha256): the management API answers loopback clients only"
            )
        else:
            log.info(
                "the management API requires an admin token",
                extra={
                    "fields": {
                        "tokens": [
                            {"name": c.name, "role": c.role, "from": c.source} for c in required
                        ]
                    }
                },
            )
        self.sampler.start()
        self.feed.start()
        self._sync_watcher(self.runtime.snapshot)

    async def close(self) -> None:
        """Stop background work; called by Gateway.stop."""
        self._started = False
        if self.watcher is not None:
            await self.watcher.close()
        await self.sampler.close()
        await self.feed.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def applied(self, snapshot: Snapshot) -> None:
        """A new snapshot went live (called by Gateway.activate)."""
        entry = self.audit.applied(snapshot)
        if entry is not None:
            self.feed.config_applied(entry, snapshot.generation)
        if self.cluster is not None:
            self.cluster.applied()
        if self._started:
            self._sync_watcher(snapshot)

    def _sync_watcher(self, snapshot: Snapshot) -> None:
        watcher = self.watcher
        if watcher is None:
            return
        if snapshot.config.hot_reload and self.cluster is None:
            watcher.start()
        else:
            watcher.stop()

    def reload_in_background(self, trigger: Trigger = "sighup") -> None:
        """Reload the config file without waiting (SIGHUP, or a sibling worker's change)."""

        async def run() -> None:
            with contextlib.suppress(KairosError):
                await self.live.reload(trigger)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- access ----------------------------------------------------------------------

    def credentials(self) -> tuple[AdminCredential, ...]:
        admin = self.runtime.snapshot.config.admin
        cached = self._credentials
        if cached is None or cached[0] is not admin:
            found = credentials(self._admin_token, admin, self._admin_tokens)
            cached = self._credentials = (admin, found)
        return cached[1]

    def guard_metrics(self, handler: OpsHandler) -> OpsHandler:
        """``handler`` for `/metrics`, answering only authorized callers when the config
        sets ``admin.metrics_public: false``."""

        def guarded(request: ApiRequest) -> tuple[int, str, bytes]:
            if not self.runtime.snapshot.config.admin.metrics_public:
                # Raises Unauthorized / Forbidden: the exchange renders the problem,
                # WWW-Authenticate included.
                authorize(request.headers, request.peer_ip, self.credentials())
            return handler(request)

        return guarded

    # -- requests --------------------------------------------------------------------

    def etag_header(self) -> list[tuple[str, str]]:
        return [("ETag", self.live.etag)]

    async def handle(self, request: ApiRequest) -> ApiResponse | StreamedResponse:
        try:
            caller = authorize(
                request.headers,
                request.peer_ip,
                self.credentials(),
                needed_role(request.method, request.path, request.query_params()),
            )
            actor = Actor("loopback" if caller is None else caller.name, request.peer_ip)
            if request.path == "/api/whoami":
                _allow(request, _READ)
                # Without tokens, a loopback caller may do everything (see access).
                role = "admin" if caller is None else caller.role
                return ApiResponse.model(200, WhoAmI(name=actor.name, role=role))
            with acting(actor):
                return await self._dispatch(request)
        except KairosError as exc:
            return ApiResponse.problem(exc, request.request_id)

    async def _dispatch(self, request: ApiRequest) -> ApiResponse | StreamedResponse:
        path = request.path
        if path == "/api/routes":
            if _allow(request, (*_READ, "POST")) == "POST":
                return await routes.create_route(self, request)
            return routes.list_routes(self, request)
        if path == "/api/routes/validate":
            _allow(request, ("POST",))
            return routes.validate_route(self, request)
        if path.startswith(routes.PREFIX):
            ref = routes.route_ref(path[len(routes.PREFIX) :])
            if ref is None:
                raise RouteNotFound(f"no management endpoint at {path}")
            method = _allow(request, (*_READ, "PUT", "DELETE"))
            if method == "PUT":
                return await routes.replace_route(self, request, ref)
            if method == "DELETE":
                return await routes.delete_route(self, request, ref)
            return routes.get_route(self, request, ref)
        if path == "/api/config":
            if _allow(request, (*_READ, "PUT")) == "PUT":
                return await config_api.put_config(self, request)
            return await self.read_config(request)
        if path == "/api/config/status":
            _allow(request, _READ)
            return config_api.status(self)
        if path == "/api/config/reload":
            _allow(request, ("POST",))
            return await config_api.reload(self, request)
        if path == "/api/config/validate":
            _allow(request, ("POST",))
            return config_api.validate_config(self, request)
        if path == "/api/config/versions":
            _allow(request, _READ)
            return await self.config_versions()
        if path == "/api/config/rollback":
            _allow(request, ("POST",))
            return await self.rollback(request)
        if path == "/api/audit":
            _allow(request, _READ)
            return await self.audit_entries(request)
        if path.startswith("/api/config/") and path.count("/") == 3:
            name = path.rsplit("/", 1)[1]
            if _allow(request, (*_READ, "PUT")) == "PUT":
                return await config_api.put_section(self, request, name)
            return config_api.get_section(self, name)
        if path == "/api/metrics":
            _allow(request, _READ)
            snapshot = MetricsSnapshot.model_validate(self.sampler.snapshot())
            return ApiResponse.model(200, snapshot)
        if path == "/api/metrics/history":
            _allow(request, _READ)
            return self.history(request)
        if path == "/api/backends":
            _allow(request, _READ)
            return self.backends()
        if path == "/api/plugins":
            _allow(request, _READ)
            return ApiResponse.model(200, self.runtime.plugins.catalog())
        if path == "/api/cache":
            caches = self.runtime.caches()
            if _allow(request, (*_READ, "DELETE")) == "DELETE":
                return await cache_api.purge_cache(request, caches, self.cache_workers)
            return cache_api.cache_figures(caches)
        if path == "/api/ai/usage":
            _allow(request, _READ)
            report = usage_report(self.runtime.services) or {
                "usage": [],
                "minutes": [],
                "targets": [],
            }
            return ApiResponse.model(200, AiUsageReport.model_validate(report))
        if path == "/api/events":
            _allow(request, _READ)
            return events_api.open_stream(self.events, request, self.heartbeat_s)
        if path == "/api/openapi.json":
            _allow(request, _READ)
            return ApiResponse.json(200, openapi_document())
        raise RouteNotFound(f"no management endpoint at {path}")

    async def read_config(self, request: ApiRequest) -> ApiResponse:
        """``GET /api/config``; with ``?secrets=clear`` (admin role, checked by
        `needed_role`) the secrets in clear, which is logged and audited."""
        clear = config_api.wants_clear_secrets(request)
        if clear:
            actor = ACTOR.get() or Actor("gateway")
            log.warning(
                "configuration read with its secrets in clear",
                extra={"fields": {"actor": actor.name, "source": actor.source}},
            )
            entry = self.audit.secrets_read(actor, _bare_etag(self.live.etag))
            if entry is not None and self.cluster is not None:
                keep = self.runtime.snapshot.config.admin.audit.keep_entries
                try:
                    await self.cluster.store.append_entry(json.dumps(entry), keep)
                except Exception as exc:
                    # The read is refused: secrets are not handed out unrecorded.
                    raise ServiceUnavailable(
                        "the cluster's audit trail cannot be written: try again"
                    ) from exc
        return config_api.get_config(self, clear=clear)

    async def audit_entries(self, request: ApiRequest) -> ApiResponse:
        """``GET /api/audit?limit=50&before=<id>``: entries, newest first; ``next`` is
        the ``before`` of the following page (null on the last)."""
        params = request.query_params()
        limit = _count("limit", params.get("limit", "50"), 1, 500)
        before = params.get("before")
        after = None if before is None else _count("before", before, 1, 2**62)
        if self.cluster is None:
            entries = self.audit.entries(limit=limit + 1, before=after)
        else:
            with self._shared_history():
                entries = await self.cluster.history.entries(limit=limit + 1, before=after)
        page, more = entries[:limit], len(entries) > limit
        body = {"entries": page, "next": page[-1]["id"] if more and page else None}
        return ApiResponse.model(200, AuditPage.model_validate(body))

    async def config_versions(self) -> ApiResponse:
        """``GET /api/config/versions``: the kept versions, newest first."""
        if self.cluster is None:
            versions = self.audit.versions()
        else:
            with self._shared_history():
                versions = await self.cluster.history.versions(self.live.etag)
        return ApiResponse.model(200, ConfigVersions.model_validate({"versions": versions}))

    @contextlib.contextmanager
    def _shared_history(self) -> Iterator[None]:
        """The cluster's Redis not answering, as a 503 naming it (the trail and the
        versions are only there; changes are refused meanwhile, so none goes unrecorded)."""
        assert self.cluster is not None
        try:
            yield
        except StoreUnavailable as exc:
            log.warning(
                "audit trail unavailable: the cluster's Redis cannot be reached",
                extra={"fields": {"redis": self.cluster.store.url, "error": str(exc)}},
            )
            raise ServiceUnavailable(
                f"the audit trail and kept versions are in the cluster's Redis "
                f"({self.cluster.store.url}), which cannot be reached; retry when it is back"
            ) from exc

    async def rollback(self, request: ApiRequest) -> ApiResponse:
        """``POST /api/config/rollback`` ``{"version": ...}``: make a kept version live
        again (saved like any change; ``If-Match`` honoured), recorded as a rollback."""
        body = request.json()
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, str) or not version:
            raise BadRequest('send {"version": "<a version from GET /api/config/versions>"}')
        if self.cluster is None:
            data = self.audit.version(version)
        else:
            with self._shared_history():
                found = await self.cluster.history.version(version)
            if found is None:
                raise RouteNotFound(f"no kept configuration version {version}")
            data = found
        current = ACTOR.get()
        actor = Actor(current.name if current else "loopback", request.peer_ip, "rollback")
        with acting(actor):
            await self.live.change(request.headers, lambda _current: dict(data))
        result = RollbackResult(restored=version.strip('"'), version=self.live.etag.strip('"'))
        return ApiResponse.model(200, result, self.etag_header())

    def history(self, request: ApiRequest) -> ApiResponse:
        """The totals' history, or with ``route=<label>`` / ``backend=<address>``
        (percent-encoded) one label's coarser history; 404 for a label never seen."""
        sampler = self.sampler
        params = request.query_params()
        unknown = sorted(set(params) - {"range", "step", *sampler.KINDS})
        if unknown:
            raise BadRequest(
                f"unknown query parameter {unknown[0]!r}; known: range, step, "
                + ", ".join(sampler.KINDS)
            )
        labels = [(kind, params[kind]) for kind in sampler.KINDS if kind in params]
        if len(labels) > 1:
            raise BadRequest("give route= or backend=, not both")
        least = sampler.label_step_s if labels else sampler.step_s
        range_s = parse_duration("range", params.get("range", "1h"))
        step_s = max(least, parse_duration("step", params.get("step", f"{least:g}s")))
        if not labels:
            series = MetricsHistory.model_validate(sampler.series(range_s, step_s))
            return ApiResponse.model(200, series)
        kind, label = labels[0]
        if not label:
            raise BadRequest(f"{kind}= needs a value")
        if not sampler.known(kind, label):
            raise RouteNotFound(f"no metrics for {kind} {label!r}")
        body = sampler.label_series(kind, label, range_s, step_s)
        return ApiResponse.model(200, MetricsHistory.model_validate(body))

    def backends(self) -> ApiResponse:
        """Per backend: address, routes, health, last check, breaker, in-flight, EWMA."""
        runtime = self.runtime
        snapshot = runtime.snapshot
        paths = {t.state.endpoint: t.path for t in snapshot.health_targets}
        now = time.monotonic()
        wall = time.time()
        items = []
        for state in runtime.registry:
            breaker = state.breaker
            record = state.health
            items.append(
                {
                    "address": state.address,
                    "routes": snapshot.routes_of(state.endpoint),
                    "available": state.available(),
                    "healthy": state.healthy,
                    "health_check": {
                        "path": paths.get(state.endpoint),
                        "last_check": _iso(record.last_check),
                        "last_error": record.last_error,
                        "consecutive_ok": record.consecutive_ok,
                        "consecutive_fail": record.consecutive_fail,
                    },
                    "circuit_breaker": {
                        "state": breaker.state,
                        "retry_after_s": round(breaker.retry_after_s(), 3),
                    },
                    "inflight": state.inflight,
                    "ewma_latency_ms": round(state.ewma(now) * 1000, 3),
                    "connections": _connections(runtime.pool.endpoint_stats(state.endpoint)),
                    "ejection": _ejection(state.outlier, now, wall),
                }
            )
        body = BackendList(backends=items, routes_down=snapshot.routes_down())
        return ApiResponse.model(200, body)
