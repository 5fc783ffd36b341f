"""Dispatch of management API calls to their handlers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kairos_core import KairosError, MethodNotAllowed, RouteNotFound

from .access import authorize
from .http import ApiRequest, ApiResponse

if TYPE_CHECKING:
    from ..app import Gateway


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class ManagementApi:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def start(self) -> None:
        """Start background work (file watcher, metrics sampler); called by Gateway.start."""

    async def close(self) -> None:
        """Stop background work; called by Gateway.stop."""

    async def handle(self, request: ApiRequest) -> ApiResponse:
        try:
            authorize(request.headers, request.peer_ip, self.gateway.settings.admin_token)
            return await self._dispatch(request)
        except KairosError as exc:
            return ApiResponse.problem(exc, request.request_id)

    async def _dispatch(self, request: ApiRequest) -> ApiResponse:
        if request.path == "/api/backends":
            if request.method not in ("GET", "HEAD"):
                raise MethodNotAllowed(f"{request.method} is not allowed", allow=("GET", "HEAD"))
            return self.backends()
        raise RouteNotFound(f"no management endpoint at {request.path}")

    def backends(self) -> ApiResponse:
        """Per backend: address, routes, health, last check, breaker, in-flight, EWMA."""
        gateway = self.gateway
        snapshot = gateway.snapshot
        paths = {t.state.endpoint: t.path for t in snapshot.health_targets}
        now = time.monotonic()
        items = []
        for state in gateway.registry:
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
                }
            )
        return ApiResponse.json(200, {"backends": items})
