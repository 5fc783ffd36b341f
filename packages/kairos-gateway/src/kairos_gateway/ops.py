"""The gateway's own endpoints: `/health`, `/ready`, `/live`, `/metrics`.

They are matched before any route (validation keeps routes off these paths) and answer
without touching a backend.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import __version__

if TYPE_CHECKING:
    from .app import Gateway
    from .exchange import Exchange, OpsHandler

JSON = "application/json"


def _json(status: int, body: dict[str, object]) -> tuple[int, str, bytes]:
    return status, JSON, json.dumps(body, separators=(",", ":")).encode()


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build(gateway: Gateway) -> dict[str, OpsHandler]:
    """Map of exact paths to handlers for `gateway`."""

    def health(_: Exchange) -> tuple[int, str, bytes]:
        snapshot = gateway.snapshot
        return _json(
            200,
            {
                "status": "healthy",
                "version": __version__,
                "uptime_s": round(gateway.uptime_s(), 3),
                "config_version": snapshot.generation,
                "routes": len(snapshot.table),
                "timestamp": _timestamp(),
            },
        )

    def ready(_: Exchange) -> tuple[int, str, bytes]:
        if gateway.ready:
            return _json(200, {"status": "ready", "config_version": gateway.snapshot.generation})
        reason = "draining" if gateway.draining else "starting"
        return _json(503, {"status": "not_ready", "reason": reason})

    def live(_: Exchange) -> tuple[int, str, bytes]:
        return _json(200, {"status": "alive"})

    def metrics(_: Exchange) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, gateway.metrics.render()

    return {"/health": health, "/ready": ready, "/live": live, "/metrics": metrics}
