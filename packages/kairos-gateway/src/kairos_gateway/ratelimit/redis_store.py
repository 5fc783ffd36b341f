"""`RedisStore`: rate-limit states in Redis, shared by every gateway that uses it.

One connection pool; one atomic script per algorithm (EVALSHA; redis-py reloads a
script the server has forgotten, e.g. after a restart). Every call is bounded by
``timeout_ms``. When Redis fails or is too slow the store answers with the configured
fallback (``on_error``), counts the failure in `errors`, logs a warning at most once
per ``warn_interval_s``, and skips Redis for ``retry_interval_s`` so a dead Redis costs
one timeout per interval rather than one per request. It never raises.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from kairos_core import Decision, Limit
from kairos_core.ratelimit import redact_url
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .scripts import SCRIPTS

#: Longest a check waits for one of the store's connections under a burst of checks.
QUEUE_TIMEOUT_S = 1.0

__all__ = ["RedisStore"]

log = logging.getLogger("kairos.gateway")


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "kairos:rl:",
        timeout_ms: int = 100,
        on_error: Literal["allow", "deny"] = "allow",
        retry_interval_s: float = 0.5,
        warn_interval_s: float = 10.0,
        max_connections: int = 64,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: None (the default) uses Redis's clock, which every gateway
        sharing this Redis agrees on; tests pass their own to replay exact times."""
        self.url = redact_url(url)
        self.key_prefix = key_prefix
        self.on_error = on_error
        self._timeout_s = timeout_ms / 1000
        self._retry_interval_s = retry_interval_s
        self._warn_interval_s = warn_interval_s
        self._clock = clock
        # A check holds a connection for one script call. Past ``max_connections``
        # concurrent checks, the rest queue on ``_slots`` for up to ``QUEUE_TIMEOUT_S``:
        # waiting for our own pool is not Redis failing, so it neither counts against
        # ``timeout_ms`` nor makes the store skip Redis. No client-side retries: one
        # bounded attempt, then the fallback.
        self._slots = asyncio.Semaphore(max_connections)
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=None,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = Redis.from_pool(pool)
        self._scripts = {name: self._client.register_script(src) for name, src in SCRIPTS.items()}
        #: Checks answered by the fallback because Redis failed (export as a counter).
        self.errors = 0
        self._skip_until = -math.inf
        self._last_warning = -math.inf
        self._unwarned = 0

    @property
    def healthy(self) -> bool:
        """False while the store is skipping Redis after a failure."""
        return time.monotonic() >= self._skip_until

    def check_nowait(self, key: str, limit: Limit) -> None:
        """Always None: a Redis check must be awaited (`check`)."""
        return None

    async def check(self, key: str, limit: Limit) -> Decision:
        if time.monotonic() < self._skip_until:
            return self._fallback(limit, None)
        now = "" if self._clock is None else repr(self._clock())
        if limit.algorithm == "fixed_window":
            args: list[str | int | float] = [limit.limit, repr(limit.window_s), now]
        elif limit.algorithm == "sliding_window":
            args = [limit.limit, repr(limit.window_s), limit.subwindows, now]
        else:
            args = [limit.limit, repr(limit.window_s), limit.capacity, now]
        script = self._scripts[limit.algorithm]
        try:
            async with asyncio.timeout(QUEUE_TIMEOUT_S):
                await self._slots.acquire()
        except TimeoutError as exc:
            return self._fallback(limit, exc)  # saturated here; Redis itself may be fine
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await script(keys=[self.key_prefix + key], args=args)
            return _decision(reply)
        except (RedisError, OSError, TimeoutError, ValueError, TypeError) as exc:
            self._skip_until = time.monotonic() + self._retry_interval_s
            return self._fallback(limit, exc)
        finally:
            self._slots.release()

    def _fallback(self, limit: Limit, exc: BaseException | None) -> Decision:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_warning < self._warn_interval_s:
            self._unwarned += 1
        else:
            reason = "still failing" if exc is None else type(exc).__name__
            if exc is not None and str(exc):
                reason += f": {exc}"
            log.warning(
                "rate-limit store %s unavailable (%s); %s requests; %d more failures "
                "since the last warning",
                self.url,
                reason,
                "allowing" if self.on_error == "allow" else "refusing",
                self._unwarned,
            )
            self._last_warning = now
            self._unwarned = 0
        if self.on_error == "allow":
            return Decision(True, limit.limit, 0.0, store_error=True)
        return Decision(
            False, 0, self._retry_interval_s, max(1.0, self._retry_interval_s), store_error=True
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _decision(reply: Any) -> Decision:
    allowed, remaining, reset, retry = reply
    return Decision(bool(allowed), int(remaining), float(reset), float(retry))
