"""Token limits per consumer: tokens per minute and per day, in fixed windows.

A call first `reserve`s its estimate (the prompt's tokens plus the ``max_tokens`` it
asks for); a reservation that would pass a limit is refused with the seconds until the
window that refused it ends. When the call is over, `Reservation.settle` adds the
difference to the real usage (negative when the estimate was high) to the windows that
were charged. The memory store is bounded (least recently seen consumers go first);
the Redis store shares the counts between gateways and workers with one script call
per reserve or settle, and when Redis is down lets calls through or refuses them, as
configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kairos_core.ai import TokenLimits, TokenStoreMemory, TokenStoreRedis

__all__ = ["Refusal", "Reservation", "TokenBudget", "token_budget"]

log = logging.getLogger("kairos.gateway")

MINUTE: Final = 60
DAY: Final = 86_400


@dataclass(frozen=True, slots=True)
class Refusal:
    window: str  # "minute" or "day"
    limit: int
    used: int
    retry_after_s: float


@dataclass(slots=True)
class Reservation:
    key: str
    tokens: int
    minute: int
    day: int
    budget: TokenBudget

    async def settle(self, used: int) -> None:
        """The call used ``used`` tokens in all."""
        delta = used - self.tokens
        self.tokens = used
        if delta:
            await self.budget.adjust(self, delta)


class TokenBudget:
    """One limit setting over one store (a route's ``token_limits``)."""

    def __init__(self, limits: TokenLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self.per_minute = limits.tokens_per_minute or 0
        self.per_day = limits.tokens_per_day or 0
        self._clock = clock

    def windows(self) -> tuple[int, int, float]:
        now = self._clock()
        return int(now // MINUTE), int(now // DAY), now

    def _refusal(self, minute_used: int, day_used: int, tokens: int, now: float) -> Refusal | None:
        if self.per_minute and minute_used + tokens > self.per_minute:
            return Refusal("minute", self.per_minute, minute_used, MINUTE - now % MINUTE)
        if self.per_day and day_used + tokens > self.per_day:
            return Refusal("day", self.per_day, day_used, DAY - now % DAY)
        return None

    async def reserve(self, key: str, tokens: int) -> Reservation | Refusal:
        raise NotImplementedError

    async def adjust(self, reservation: Reservation, delta: int) -> None:
        raise NotImplementedError

    def remaining(self, used_minute: int, used_day: int) -> int:
        left = [
            limit - used
            for limit, used in ((self.per_minute, used_minute), (self.per_day, used_day))
            if limit
        ]
        return max(0, min(left))

    async def aclose(self) -> None:
        return None


class MemoryBudget(TokenBudget):
    def __init__(
        self, limits: TokenLimits, store: TokenStoreMemory, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(limits, clock)
        #: key -> [minute, used in it, day, used in it]
        self._counts: OrderedDict[str, list[int]] = OrderedDict()
        self._max_keys = store.max_keys

    def _entry(self, key: str, minute: int, day: int) -> list[int]:
        entry = self._counts.get(key)
        if entry is None:
            entry = self._counts[key] = [minute, 0, day, 0]
            while len(self._counts) > self._max_keys:
                self._counts.popitem(last=False)
        else:
            self._counts.move_to_end(key)
            if entry[0] != minute:
                entry[0], entry[1] = minute, 0
            if entry[2] != day:
                entry[2], entry[3] = day, 0
        return entry

    def used(self, key: str) -> tuple[int, int]:
        minute, day, _ = self.windows()
        entry = self._counts.get(key)
        if entry is None:
            return 0, 0
        return (entry[1] if entry[0] == minute else 0), (entry[3] if entry[2] == day else 0)

    async def reserve(self, key: str, tokens: int) -> Reservation | Refusal:
        minute, day, now = self.windows()
        entry = self._entry(key, minute, day)
        refusal = self._refusal(entry[1], entry[3], tokens, now)
        if refusal is not None:
            return refusal
        entry[1] += tokens
        entry[3] += tokens
        return Reservation(key, tokens, minute, day, self)

    async def adjust(self, reservation: Reservation, delta: int) -> None:
        entry = self._counts.get(reservation.key)
        if entry is None:
            return
        if entry[0] == reservation.minute:
            entry[1] = max(0, entry[1] + delta)
        if entry[2] == reservation.day:
            entry[3] = max(0, entry[3] + delta)


# KEYS: minute key, day key. ARGV: tokens, per-minute (0: none), per-day (0: none),
# check (1: refuse past a limit, 0: add only). Returns {refused window (0/1/2), minute
# count, day count}.
_SCRIPT: Final = """
local m = tonumber(redis.call('GET', KEYS[1]) or '0')
local d = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = tonumber(ARGV[1])
if ARGV[4] == '1' then
  if tonumber(ARGV[2]) > 0 and m + t > tonumber(ARGV[2]) then return {1, m, d} end
  if tonumber(ARGV[3]) > 0 and d + t > tonumber(ARGV[3]) then return {2, m, d} end
end
m = redis.call('INCRBY', KEYS[1], t)
if m < 0 then redis.call('SET', KEYS[1], 0, 'KEEPTTL'); m = 0 end
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], 120) end
d = redis.call('INCRBY', KEYS[2], t)
if d < 0 then redis.call('SET', KEYS[2], 0, 'KEEPTTL'); d = 0 end
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], 90000) end
return {0, m, d}
"""


class RedisDown(Exception):
    pass


class RedisBudget(TokenBudget):
    def __init__(
        self, limits: TokenLimits, store: TokenStoreRedis, clock: Callable[[], float] = time.time
    ) -> None:
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        super().__init__(limits, clock)
        self.store = store
        self._client: Any = Redis.from_url(
            store.url,
            socket_timeout=store.timeout_s,
            socket_connect_timeout=store.timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._client.register_script(_SCRIPT)
        self.errors = 0

    def _keys(self, key: str, minute: int, day: int) -> list[str]:
        prefix = self.store.prefix
        return [f"{prefix}tpm:{key}:{minute}", f"{prefix}tpd:{key}:{day}"]

    async def _call(self, keys: list[str], tokens: int, check: bool) -> list[int]:
        try:
            async with asyncio.timeout(self.store.timeout_s):
                result = await self._script(
                    keys=keys, args=[tokens, self.per_minute, self.per_day, 1 if check else 0]
                )
        except Exception as exc:
            self.errors += 1
            log.warning("token-limit store failed", extra={"fields": {"error": str(exc)}})
            raise RedisDown(str(exc)) from exc
        return [int(v) for v in result]

    async def reserve(self, key: str, tokens: int) -> Reservation | Refusal:
        minute, day, now = self.windows()
        try:
            refused, used_minute, used_day = await self._call(
                self._keys(key, minute, day), tokens, True
            )
        except RedisDown:
            if self.store.fail_open:
                return Reservation(key, 0, -1, -1, self)
            return Refusal("store", 0, 0, 1.0)
        if refused == 1:
            return Refusal("minute", self.per_minute, used_minute, MINUTE - now % MINUTE)
        if refused == 2:
            return Refusal("day", self.per_day, used_day, DAY - now % DAY)
        return Reservation(key, tokens, minute, day, self)

    async def adjust(self, reservation: Reservation, delta: int) -> None:
        if reservation.minute < 0:
            return  # let through while Redis was down: nothing was counted
        with contextlib.suppress(RedisDown):
            await self._call(
                self._keys(reservation.key, reservation.minute, reservation.day), delta, False
            )

    async def aclose(self) -> None:
        await self._client.aclose()


def token_budget(limits: TokenLimits) -> TokenBudget:
    store = limits.store
    if isinstance(store, TokenStoreRedis):
        return RedisBudget(limits, store)
    return MemoryBudget(limits, store)


def retry_after(refusal: Refusal) -> int:
    return max(1, math.ceil(refusal.retry_after_s))
