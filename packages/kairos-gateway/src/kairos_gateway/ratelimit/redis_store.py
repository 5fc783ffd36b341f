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
from typing import Any, Literal, TypeVar

from kairos_core import Decision, Limit
from kairos_core.limits import Lease
from kairos_core.ratelimit import redact_url
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .scripts import LEASE_SCRIPTS, SCRIPTS

T = TypeVar("T")

#: Longest a check waits for one of the store's connections under a burst of checks.
QUEUE_TIMEOUT_S = 1.0

__all__ = ["RedisStore", "StoreUnavailable"]

log = logging.getLogger("kairos.gateway")


class StoreUnavailable(Exception):
    """Redis failed, did not answer in time, or is being skipped after a failure."""


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
        self._leases = {
            name: self._client.register_script(src) for name, src in LEASE_SCRIPTS.items()
        }
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
            return self.fallback(limit, None)
        now = "" if self._clock is None else repr(self._clock())
        if limit.algorithm == "fixed_window":
            args: list[str | int | float] = [limit.limit, repr(limit.window_s), now]
        elif limit.algorithm == "sliding_window":
            args = [limit.limit, repr(limit.window_s), limit.subwindows, now]
        else:
            args = [limit.limit, repr(limit.window_s), limit.capacity, now]
        try:
            return await self._call(self._scripts[limit.algorithm], key, args, _decision)
        except StoreUnavailable as exc:
            return self.fallback(limit, exc.__cause__)

    async def lease(
        self, key: str, limit: Limit, want: int, give_back: int = 0, window: int = 0
    ) -> Lease:
        """Take up to ``want`` requests at once (`kairos_core.limits.lease`), after
        giving back ``give_back`` unused ones. Raises `StoreUnavailable` when Redis
        fails or is skipped; the caller answers with `fallback`."""
        if time.monotonic() < self._skip_until:
            raise StoreUnavailable("skipping Redis after a failure")
        now = "" if self._clock is None else repr(self._clock())
        if limit.algorithm == "fixed_window":
            args: list[str | int | float] = [
                limit.limit,
                repr(limit.window_s),
                want,
                give_back,
                str(window),
                now,
            ]
        elif limit.algorithm == "token_bucket":
            args = [limit.limit, repr(limit.window_s), limit.capacity, want, give_back, now]
        else:
            raise ValueError(f"no leases for {limit.algorithm}")
        return await self._call(self._leases[limit.algorithm], key, args, _lease)

    async def _call(
        self,
        script: AsyncScript,
        key: str,
        args: list[str | int | float],
        parse: Callable[[Any], T],
    ) -> T:
        """One script call, bounded; a failure makes the store skip Redis for a while,
        is logged (rate limited) and raised as `StoreUnavailable`."""
        try:
            async with asyncio.timeout(QUEUE_TIMEOUT_S):
                await self._slots.acquire()
        except TimeoutError as exc:
            self.warn(exc)
            raise StoreUnavailable("no connection free") from exc  # Redis itself may be fine
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await script(keys=[self.key_prefix + key], args=args)
            return parse(reply)
        except (RedisError, OSError, TimeoutError, ValueError, TypeError) as exc:
            self._skip_until = time.monotonic() + self._retry_interval_s
            self.warn(exc)
            raise StoreUnavailable("Redis failed") from exc
        finally:
            self._slots.release()

    def fallback(self, limit: Limit, exc: BaseException | None) -> Decision:
        """The ``on_error`` answer to a check Redis could not decide (counted in
        `errors`)."""
        self.errors += 1
        if exc is None:
            self.warn(None)
        if self.on_error == "allow":
            return Decision(True, limit.limit, 0.0, store_error=True)
        return Decision(
            False, 0, self._retry_interval_s, max(1.0, self._retry_interval_s), store_error=True
        )

    def warn(self, exc: BaseException | None) -> None:
        """Log that Redis is unavailable, at most once per ``warn_interval_s``."""
        now = time.monotonic()
        if now - self._last_warning < self._warn_interval_s:
            self._unwarned += 1
            return
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

    async def aclose(self) -> None:
        await self._client.aclose()


def _decision(reply: Any) -> Decision:
    allowed, remaining, reset, retry = reply
    return Decision(bool(allowed), int(remaining), float(reset), float(retry))


def _lease(reply: Any) -> Lease:
    granted, remaining, reset, retry, window = reply
    return Lease(int(granted), int(remaining), float(reset), float(retry), int(window))
