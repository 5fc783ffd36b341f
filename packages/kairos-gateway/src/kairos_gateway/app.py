"""The gateway process: wires the runtime, the listeners and the management side.

`Gateway` builds the parts and owns their lifecycle: the `Runtime` (live snapshot,
backend state, metrics, pool), the HTTP listeners whose exchanges it hosts
(`exchange.Host`), the gateway endpoints (`ops`), and the management side: `LiveConfig`,
the cluster node, the file watcher, the metrics sampler and the `ManagementApi`. Those
depend on the runtime, never on this module.

Lifecycle: `start()` binds (or adopts) the listening sockets and begins serving;
`stop()` drains: it stops accepting, closes idle keep-alive connections and ends the
event streams, lets in-flight requests finish within the drain timeout, then closes
what is left, the upstream pool and the access log, in that order. `Gateway` is also
an async context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from kairos_core import MAX_BODY_LIMIT, GatewayConfig, KairosError
from tornado.http1connection import HTTP1ServerConnection
from tornado.netutil import bind_sockets

from . import ops
from .accesslog import AccessLog
from .backends import EWMA_DECAY_S
from .cluster import with_redis_url
from .events import EventBus
from .health import HealthChecker
from .management import LiveConfig, ManagementApi, MetricsSampler
from .management.watcher import FileWatcher
from .messages import ApiRequest, ApiResponse, OpsHandler, StreamedResponse
from .metrics_share import MetricsShare
from .plugins import PluginRegistry
from .redirect import RedirectServer
from .runtime import Runtime
from .server import KairosHTTPServer
from .settings import HARD_HEADER_LIMIT, GatewaySettings
from .snapshot import Snapshot
from .tls import ServerTls
from .tracing import build_tracer
from .websocket import OpenWebSockets

if TYPE_CHECKING:
    from .auth import JwtVerifier
    from .cluster import ClusterNode

log = logging.getLogger("kairos.gateway")


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        settings: GatewaySettings | None = None,
        *,
        source: Path | None = None,
        access_log: AccessLog | None = None,
        ewma_decay_s: float = EWMA_DECAY_S,
        worker: int | None = None,
        metrics_dir: Path | None = None,
        plugins: PluginRegistry | None = None,
    ) -> None:
        self.settings = settings = settings or GatewaySettings()
        #: This process's index among `--workers` processes (None: a single process).
        self.worker = worker
        #: Called after a change made through the management API is saved and live
        #: (worker processes use it to tell their siblings).
        self.on_config_change: Callable[[], None] | None = None
        config = with_redis_url(config, settings.redis_url)
        plugins = plugins or PluginRegistry()
        # The process setting decides, also for a registry given by the caller.
        plugins.slow_s = settings.plugin_slow_ms / 1000
        self.runtime = runtime = Runtime(
            config, source=source, plugins=plugins, ewma_decay_s=ewma_decay_s
        )
        if metrics_dir is not None:
            runtime.metrics.share = MetricsShare(metrics_dir)
        self.max_header_size = settings.max_header_size
        self.health = HealthChecker(rng=runtime.rng)
        self.access_log = access_log or AccessLog.open(settings.access_log, settings.log_format)
        #: Trace propagation and span export (read at start-up; raises ConfigError when
        #: an exporter needs the SDK and it is missing).
        self._tracing = runtime.snapshot.config.tracing
        self.tracer = build_tracer(self._tracing, worker=worker)
        # The management side: changes (file, API, cluster), metrics history, the API.
        self.live = LiveConfig(runtime, runtime.snapshot.source, on_change=self._config_changed)
        block = runtime.snapshot.config.cluster
        self.cluster: ClusterNode | None = None
        if block is not None:
            from .cluster.node import ClusterNode  # loads redis-py only in cluster mode

            self.cluster = ClusterNode(runtime, self.live, block)
        self.live.cluster = self.cluster
        file = self.live.file
        watcher = (
            None
            if file is None
            else FileWatcher(file.path, self._file_changed, debounce_ms=settings.watch_debounce_ms)
        )
        sampler = MetricsSampler(
            runtime,
            uptime_s=self.uptime_s,
            interval_s=settings.metrics_interval_s,
            step_s=settings.metrics_history_step_s,
            retention_s=settings.metrics_retention_s,
        )
        #: Live events (`GET /api/events`): this process's own (per worker).
        self.events = EventBus()
        self.management = ManagementApi(
            runtime,
            self.live,
            admin_token=settings.admin_token,
            admin_tokens=settings.admin_tokens,
            sampler=sampler,
            cluster=self.cluster,
            watcher=watcher,
            events=self.events,
        )
        self.health.on_flip = self.management.feed.health_changed
        self.ops: dict[str, OpsHandler] = ops.build(self)
        self.ops["/metrics"] = self.management.guard_metrics(self.ops["/metrics"])
        runtime.observe(self._activated)
        #: The admin listener's address as configured at start-up (None: the proxy port).
        self._admin_listen = runtime.snapshot.config.admin.listen
        #: Read at start-up only, like the admin listener.
        self._cluster = runtime.snapshot.config.cluster
        #: Read at start-up too, except the certificate files (`ServerTls.refresh`).
        self._listen = runtime.snapshot.config.listen
        #: The proxy port's TLS (None: plain HTTP), and the HTTP -> HTTPS redirect.
        self.tls: ServerTls | None = None
        self._redirect_server: RedirectServer | None = None
        self._redirect_sockets: list[socket.socket] = []
        self._tls_watch: asyncio.Task[None] | None = None
        self._admin_server: KairosHTTPServer | None = None
        self._admin_sockets: list[socket.socket] = []
        #: Connections waiting for their next request, with the loop time they began.
        self.waiting: dict[HTTP1ServerConnection, float] = {}
        self.ready = False
        self.draining = False
        self.inflight = 0
        #: Proxied WebSockets: in flight like any request until they close.
        self.websockets = OpenWebSockets()
        self._drained = asyncio.Event()
        self._server: KairosHTTPServer | None = None
        self._sockets: list[socket.socket] = []
        self._housekeeping: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._started_at = time.monotonic()
        self.clock = asyncio.get_running_loop().time

    # -- what the exchange needs (exchange.Host) -------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The live configuration (the runtime's)."""
        return self.runtime.snapshot

    async def handle_management(self, request: ApiRequest) -> ApiResponse | StreamedResponse:
        return await self.management.handle(request)

    def uptime_s(self) -> float:
        return time.monotonic() - self._started_at

    def request_started(self) -> None:
        self.inflight += 1
        self.runtime.metrics.active_requests += 1

    def request_finished(self) -> None:
        self.inflight -= 1
        self.runtime.metrics.active_requests -= 1
        if self.draining and self.inflight == 0:
            self._drained.set()

    def apply(self, config: GatewayConfig, *, source: Path | None = None) -> Snapshot:
        """Make ``config`` live (`Runtime.apply`); raises `ConfigError`, changing nothing."""
        return self.runtime.apply(config, source=source)

    def _activated(self, previous: Snapshot, snapshot: Snapshot) -> None:
        """A new snapshot went live: follow it with what lives outside the runtime."""
        if snapshot.verifier is not previous.verifier:
            self._swap_verifier(previous.verifier, snapshot.verifier)
        if self._server is not None:
            self.health.update(snapshot.health_targets)
        config = snapshot.config
        if config.admin.listen != self._admin_listen:
            log.warning("admin.listen changed: the admin listener moves only on a restart")
        if config.tracing != self._tracing:
            log.warning("tracing changed: trace propagation and export change only on a restart")
        if config.cluster != self._cluster:
            log.warning("cluster changed: a node joins or leaves a cluster only on a restart")
        if config.listen.startup_fields != self._listen.startup_fields:
            log.warning(
                "listen changed: TLS settings other than the certificate files, and the "
                "redirect listener, change only on a restart"
            )
        if self.tls is not None and config.listen.tls is not None:
            self.tls.refresh(config.listen.tls)
        self.management.applied(snapshot)

    def _config_changed(self) -> None:
        if self.on_config_change is not None:
            self.on_config_change()

    async def _file_changed(self) -> None:
        with contextlib.suppress(KairosError):  # recorded in the status, and logged
            await self.live.reload("watcher")

    def _swap_verifier(self, old: JwtVerifier | None, new: JwtVerifier | None) -> None:
        """Start the new JWT verifier (its JWKS fetch) and close the old one, in the
        background: requests already holding the old snapshot may still use it."""
        loop = asyncio.get_running_loop()
        if new is not None and self._server is not None:
            self._background.add(loop.create_task(new.start()))
        if old is not None:
            self._background.add(loop.create_task(old.close()))
        self._background = {t for t in self._background if not t.done()}

    def abort_drain(self) -> None:
        """Stop waiting for in-flight requests (a second SIGTERM/SIGINT)."""
        self._drained.set()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs actually bound (useful with port 0)."""
        return [s.getsockname()[:2] for s in self._sockets]

    @property
    def scheme(self) -> str:
        """``https`` when the proxy port terminates TLS."""
        return "http" if self.tls is None else "https"

    @property
    def redirect_addresses(self) -> list[tuple[str, int]]:
        """Where the HTTP -> HTTPS redirect listener is bound (empty when there is none)."""
        return [s.getsockname()[:2] for s in self._redirect_sockets]

    def reload_certificates(self) -> bool:
        """Read the TLS certificate files again now (SIGHUP); see `ServerTls.refresh`."""
        return self.tls.refresh() if self.tls is not None else False

    @property
    def has_admin_listener(self) -> bool:
        return self._admin_server is not None

    @property
    def admin_addresses(self) -> list[tuple[str, int]]:
        """Where the separate admin listener is bound (empty when there is none)."""
        return [s.getsockname()[:2] for s in self._admin_sockets]

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        settings = self.settings
        tls_config = self._listen.tls
        if tls_config is not None:
            # Raises ConfigError (naming the field and file) before anything is bound.
            self.tls = ServerTls(tls_config)
            self.runtime.metrics.registry.register(self.tls)
        if sockets is None:
            # Worker processes each bind the port: the kernel spreads connections.
            sockets = bind_sockets(settings.port, settings.host, reuse_port=settings.workers > 1)
        self._sockets = sockets
        # A cluster node takes the cluster's configuration before its first request.
        if self.cluster is not None:
            await self.cluster.start()
        server = KairosHTTPServer(
            self,
            # Both limits are enforced per request by the gateway (431, 413 per route);
            # Tornado's own limits are only the outer bounds.
            max_header_size=max(HARD_HEADER_LIMIT, settings.max_header_size),
            max_body_size=MAX_BODY_LIMIT,
            body_timeout=settings.body_timeout_s,
            ssl_options=None if self.tls is None else self.tls.context,
        )
        server.add_sockets(sockets)
        self._server = server
        try:
            self._start_redirect()
        except OSError:
            server.stop()
            self._server = None
            raise
        admin_address = self.runtime.snapshot.config.admin.listen_address
        if admin_address is not None:
            # Only the management API (and /health, /ready, /live, /metrics) answers
            # here; the proxy port no longer serves /api/*.
            try:
                self._admin_sockets = bind_sockets(admin_address[1], admin_address[0])
            except OSError:
                server.stop()
                self._server = None
                raise
            admin = KairosHTTPServer(
                self,
                max_header_size=max(HARD_HEADER_LIMIT, settings.max_header_size),
                max_body_size=MAX_BODY_LIMIT,
                body_timeout=settings.body_timeout_s,
                admin=True,
            )
            admin.add_sockets(self._admin_sockets)
            self._admin_server = admin
            for host, port in self.admin_addresses:
                log.info(f"management API listening on http://{host}:{port}")
        self._started_at = time.monotonic()
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())
        if self.tls is not None:
            self._tls_watch = asyncio.get_running_loop().create_task(self.tls.watch())
        snapshot = self.runtime.snapshot
        self.health.update(snapshot.health_targets)
        if snapshot.verifier is not None:
            # The first JWKS fetch must not hold up the listener; until it lands,
            # tokens signed by JWKS keys are refused (401).
            loop = asyncio.get_running_loop()
            self._background.add(loop.create_task(snapshot.verifier.start()))
        await self.management.start()
        self.ready = True

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Drain and shut down; safe to call more than once."""
        if self._server is None:
            return
        server, self._server = self._server, None
        timeout = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        self.ready = False
        self.draining = True
        server.stop()
        admin, self._admin_server = self._admin_server, None
        if admin is not None:
            admin.stop()
        redirect, self._redirect_server = self._redirect_server, None
        if redirect is not None:
            redirect.stop()
        for conn in list(self.waiting):
            conn.stream.close()
        # Event streams never end by themselves: end them now, so they do not hold up
        # the drain (their clients reconnect to another instance).
        self.events.close()
        if self.inflight > 0:
            log.info("draining", extra={"fields": {"in_flight": self.inflight}})
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning(
                    "drain timeout reached; closing connections",
                    extra={"fields": {"in_flight": self.inflight}},
                )
        # Open WebSockets had the drain timeout (they count as in flight): close them.
        await self.websockets.close_all()
        await server.close_all_connections()
        if admin is not None:
            await admin.close_all_connections()
        if redirect is not None:
            await redirect.close_all_connections()
        for task in (self._housekeeping, self._tls_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.management.close()
        if self.cluster is not None:
            await self.cluster.close()
        await self.health.close()
        for task in self._background:
            task.cancel()
        runtime = self.runtime
        if runtime.snapshot.verifier is not None:
            await runtime.snapshot.verifier.close()
        await runtime.aclose()
        if self.tracer is not None:
            await self.tracer.aclose()  # sends the spans still queued
        self.access_log.close()
        metrics = runtime.metrics
        if metrics.share is not None:
            metrics.share.publish(metrics.own_view())

    def _start_redirect(self) -> None:
        """Bind the plain-HTTP listener that redirects to https (``listen.http_redirect``)."""
        address = self._listen.http_redirect_address
        if address is None:
            return
        settings = self.settings
        self._redirect_sockets = bind_sockets(
            address[1], address[0], reuse_port=settings.workers > 1
        )
        https_port = self._listen.https_port or self._sockets[0].getsockname()[1]
        redirect = RedirectServer(https_port=https_port, idle_timeout_s=settings.idle_timeout_s)
        redirect.add_sockets(self._redirect_sockets)
        self._redirect_server = redirect
        for host, port in self.redirect_addresses:
            log.info(f"redirecting http://{host}:{port} to https (port {https_port})")

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _housekeep(self) -> None:
        """Once per interval: close connections idle too long, write access lines."""
        idle = self.settings.idle_timeout_s
        interval = min(1.0, max(0.05, idle / 4))
        while True:
            await asyncio.sleep(interval)
            deadline = self.clock() - idle
            # Oldest first: a connection is (re-)added when it starts waiting, with the
            # loop's monotonic time, so the scan stops at the first one still in time
            # and costs what expires, not what is open.
            expired = []
            for conn, since in self.waiting.items():
                if since >= deadline:
                    break
                expired.append(conn)
            for conn in expired:
                del self.waiting[conn]
                conn.stream.close()
            self.access_log.flush()
            metrics = self.runtime.metrics
            if metrics.share is not None:
                metrics.share.publish(metrics.own_view())
