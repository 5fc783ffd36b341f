"""Active health checks, and probes for breakers no request comes to test.

One background loop per backend. For a backend with a check path it sends
`GET <health_check_path>` every `interval_s` (the first probe after a small random
delay, so many backends are not probed in lockstep), with `timeout_s` for the whole
probe, and feeds the result to `BackendState.record_probe`, which flips `healthy` after
`healthy_threshold` / `unhealthy_threshold` consecutive results.

A breaker goes from open to half-open only when a request is admitted (decision 18), so
with no traffic it would never leave open. When a backend's breaker reads half-open and
no request is in flight to it, the loop takes the breaker's probe permit itself and
settles it with its own probe: the health check's result where the backend has one,
else a plain TCP connect (within `timeout_s`), checked about once a second.

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
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._version import __version__
from .snapshot import HealthTarget
from .upstream import Endpoint, UpstreamError, UpstreamPool

if TYPE_CHECKING:
    from .backends import BackendState
    from .breaker import Permit

log = logging.getLogger("kairos.gateway")

# A probe reads at most this much of the response body before giving up on the rest.
_MAX_PROBE_BODY = 64 * 1024
_USER_AGENT = f"kairos-health-check/{__version__}"
#: How often a backend without a check path is looked at while its breaker is closed.
_BREAKER_POLL_S = 1.0


def _breaker_probe(state: BackendState) -> Permit | None:
    """The breaker's probe permit, when it is ready to go half-open and no request is
    there to take it; taking it makes the transition (and logs it), as a request would."""
    breaker = state.breaker
    if state.inflight or breaker.state != "half_open":
        return None
    return breaker.acquire()


def _settle(permit: Permit | None, passed: bool) -> None:
    if permit is not None:
        if passed:
            permit.success()
        else:
            permit.failure()


#: Called with the backend and the failed probe's error when a check flips ``healthy``.
HealthListener = Callable[["BackendState", str | None], None]


class HealthChecker:
    def __init__(
        self, *, rng: random.Random | None = None, on_flip: HealthListener | None = None
    ) -> None:
        self.on_flip = on_flip
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
        if target.path is None:
            await self._watch_breaker(target)
            return
        interval = target.config.interval_s
        await asyncio.sleep(self._rng.uniform(0, min(interval, 1.0) * 0.1))
        loop = asyncio.get_running_loop()
        state = target.state
        while True:
            started = loop.time()
            permit = _breaker_probe(state)
            try:
                passed, error = await self.probe(target)
                _settle(permit, passed)
            finally:
                if permit is not None:
                    permit.release()  # cancelled mid-probe: frees the slot
            if state.record_probe(passed, at=time.time(), error=error, config=target.config):
                fields = {"backend": state.address, "path": target.path}
                if state.healthy:
                    log.info("backend healthy again", extra={"fields": fields})
                else:
                    log.warning("backend unhealthy", extra={"fields": {**fields, "error": error}})
                if self.on_flip is not None:
                    self.on_flip(state, error)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    async def _watch_breaker(self, target: HealthTarget) -> None:
        """A backend without a check path: probe its breaker when no request does."""
        state = target.state
        await asyncio.sleep(self._rng.uniform(0, 0.1))
        while True:
            permit = _breaker_probe(state)
            if permit is not None:
                try:
                    passed, error = await self.connect(target)
                    _settle(permit, passed)
                finally:
                    permit.release()
                if not passed:
                    log.info(
                        "breaker probe failed",
                        extra={"fields": {"backend": state.address, "error": error}},
                    )
            # Open: sleep until it may go half-open; else look again in a while.
            await asyncio.sleep(state.breaker.retry_after_s() or _BREAKER_POLL_S)

    async def connect(self, target: HealthTarget) -> tuple[bool, str | None]:
        """A TCP connect to the backend, closed at once: (connected, why not)."""
        endpoint = target.state.endpoint
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(target.config.timeout_s):
                transport, _ = await loop.create_connection(
                    asyncio.Protocol, endpoint.host, endpoint.port
                )
        except TimeoutError:
            return False, "timeout"
        except OSError as exc:
            return False, f"connect: {exc.strerror or exc}"
        transport.close()
        return True, None

    async def probe(self, target: HealthTarget) -> tuple[bool, str | None]:
        """One probe of the check path: (passed, why it failed)."""
        config = target.config
        endpoint = target.state.endpoint
        assert target.path is not None
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
