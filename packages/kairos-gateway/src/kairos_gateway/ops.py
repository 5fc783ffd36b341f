"""The gateway's own endpoints: `/health`, `/ready`, `/live`, `/metrics`.

They are matched before any route (validation keeps routes off these paths) and answer
without touching a backend. They read the process through `OpsState` (the app's
`Gateway` fits it).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ._version import __version__

if TYPE_CHECKING:
    from kairos_core import ClusterStatus

    from .messages import ApiRequest, OpsHandler
    from .runtime import Runtime


class _Cluster(Protocol):
    def status(self) -> ClusterStatus: ...


class OpsState(Protocol):
    runtime: Runtime
    ready: bool
    draining: bool
    worker: int | None

    @property
    def cluster(self) -> _Cluster | None: ...
    def uptime_s(self) -> float: ...


JSON = "application/json"


def _json(status: int, body: dict[str, object]) -> tuple[int, str, bytes]:
    return status, JSON, json.dumps(body, separators=(",", ":")).encode()


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build(gateway: OpsState) -> dict[str, OpsHandler]:
    """Map of exact paths to handlers for `gateway`."""
    runtime = gateway.runtime

    def health(_: ApiRequest) -> tuple[int, str, bytes]:
        # Always 200: the gateway process is fine. Routes whose backends are all out of
        # rotation make it "degraded", named so an operator sees which.
        snapshot = runtime.snapshot
        down = snapshot.routes_down()
        return _json(
            200,
            {
                "status": "degraded" if down else "healthy",
                "version": __version__,
                "uptime_s": round(gateway.uptime_s(), 3),
                "config_version": snapshot.generation,
                "routes": len(snapshot.table),
                "timestamp": _timestamp(),
                "pid": os.getpid(),
                "worker": gateway.worker,
                "routes_down": down,
            },
        )

    def ready(_: ApiRequest) -> tuple[int, str, bytes]:
        # Backends being down does not make the gateway unready: taking every gateway
        # out of a load balancer because one upstream is down would widen the outage.
        states = list(runtime.registry)
        summary = {
            "total": len(states),
            "available": sum(1 for s in states if s.available()),
            "unhealthy": sum(1 for s in states if not s.healthy),
            "circuit_open": sum(1 for s in states if s.breaker.state != "closed"),
            "ejected": sum(1 for s in states if s.outlier.ejected()),
        }
        # Likewise a cluster node that lost Redis stays ready, serving what it last
        # applied; the body says it is degraded.
        cluster = gateway.cluster
        extra = {} if cluster is None else {"cluster": cluster.status().model_dump(mode="json")}
        if gateway.ready:
            return _json(
                200,
                {
                    "status": "ready",
                    "config_version": runtime.snapshot.generation,
                    "backends": summary,
                    **extra,
                },
            )
        reason = "draining" if gateway.draining else "starting"
        return _json(503, {"status": "not_ready", "reason": reason, "backends": summary, **extra})

    def live(_: ApiRequest) -> tuple[int, str, bytes]:
        return _json(200, {"status": "alive"})

    def metrics(_: ApiRequest) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, runtime.metrics.render()

    return {
        "/health": health,
        "/ready": ready,
        "/live": live,
        "/metrics": metrics,
    }
