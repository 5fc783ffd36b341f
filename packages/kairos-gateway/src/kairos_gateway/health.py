"""Active health checks: one background probe loop per backend with a check path.

Each loop sends `GET <health_check_path>` every `interval_s` (the first probe after a
small random delay, so many backends are not probed in lockstep), with `timeout_s` for
the whole probe, and feeds the result to `BackendState.record_probe`, which flips
`healthy` after `healthy_threshold` / `unhealthy_threshold` consecutive results.
Probes never run on the request path; they use their own connection pool so they
neither take nor fill the data path's idle connections. `update()` reconciles the loops
with a new snapshot's targets; `close()` stops them all.

Backends start healthy: a new backend is in rotation until probes say otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable

from ._version import __version__
from .snapshot import HealthTarget
from .upstream import Endpoint, UpstreamError, UpstreamPool

log = logging.getLogger("kairos.gateway")

# A probe reads at most this much of the response body before giving up on the rest.
_MAX_PROBE_BODY = 64 * 1024
_USER_AGENT = f"kairos-health-check/{__version__}"


class HealthChecker:
    def __init__(self, *, rng: random.Random | None = None) -> None:
        # No idle connections: each probe connects afresh, so it checks that the backend
        # accepts connections, and never fails on a connection the backend timed out.
        self._pool = UpstreamPool(max_idle_per_endpoint=0)
        self._tasks: dict[Endpoint, tuple[HealthTarget, asyncio.Task[None]]] = {}
        self._rng = rng or random.Random()

    def update(self, targets: Iterable[HealthTarget]) -> None:
        """Run exactly one probe loop per target; restart those whose settings changed."""
        wanted = {t.state.endpoint: t for t in targets}
        for endpoint, (target, task) in list(self._tasks.items()):
            new = wanted.get(endpoint)
            if new is None or new.path != target.path or new.config != target.config:
                task.cancel()
                del self._tasks[endpoint]
        loop = asyncio.get_running_loop()
        for endpoint, target in wanted.items():
            if endpoint not in self._tasks:
                task = loop.create_task(self._run(target), name=f"health-check {endpoint.label}")
                self._tasks[endpoint] = (target, task)

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pool.close()

    async def _run(self, target: HealthTarget) -> None:
        interval = target.config.interval_s
        await asyncio.sleep(self._rng.uniform(0, min(interval, 1.0) * 0.1))
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            passed, error = await self.probe(target)
            state = target.state
            if state.record_probe(passed, at=time.time(), error=error, config=target.config):
                fields = {"backend": state.address, "path": target.path}
                if state.healthy:
                    log.info("backend healthy again", extra={"fields": fields})
                else:
                    log.warning("backend unhealthy", extra={"fields": {**fields, "error": error}})
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def probe(self, target: HealthTarget) -> tuple[bool, str | None]:
        """One probe: (passed, why it failed)."""
        config = target.config
        endpoint = target.state.endpoint
        headers = [
            ("Host", endpoint.host_header),
            ("User-Agent", _USER_AGENT),
            ("Accept", "*/*"),
        ]
        try:
            async with asyncio.timeout(config.timeout_s):
                response = await self._pool.request(
                    endpoint,
                    "GET",
                    target.path,
                    headers,
                    connect_timeout=config.timeout_s,
                    read_timeout=config.timeout_s,
                )
                received = 0
                while received <= _MAX_PROBE_BODY and (chunk := await response.read()):
                    received += len(chunk)
                if not response.complete:
                    response.abort()
        except TimeoutError:
            return False, "timeout"
        except UpstreamError as exc:
            return False, f"{exc.kind}: {exc}" if str(exc) else exc.kind
        if config.status_ok(response.status):
            return True, None
        return False, f"status {response.status}"
