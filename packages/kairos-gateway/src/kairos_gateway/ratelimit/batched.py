"""`BatchedStore`: a Redis-backed limit answered from local leases (``sync: "batched"``).

Instead of one script call per request, the gateway leases a chunk of requests for a
key (one call of a lease script, `kairos_core.limits.lease`) and answers from it with
no await until it runs low; the next lease is then taken in the background, so a busy
key costs about one Redis call per lease. A refusal is remembered as well, so a client
over its limit costs no Redis call either until it could pass again.

Bounds, per gateway and key:

* **Overshoot.** Everything allowed was taken from the shared count; a lease is only
  early. Leased requests still unused when the others have used up the limit can pass
  on top of it: at most one lease, ``max_lease`` = min(``batch_size``, a tenth of the
  quota or of the bucket's capacity, at least 1) requests. A fixed window's lease ends
  with its window, so it never carries over into the next one.
* **Undershoot.** Requests leased but not used are not available to the other gateways
  until this one gives them back, which its next lease for the key does (while the
  window lasts, for a fixed window); a key left idle keeps at most one lease.
* **Staleness.** A lease is used for at most ``sync_interval_s``, a refusal remembered
  at most that long (or until the limit said a request would pass). ``remaining`` in
  the headers is the shared count at the last lease plus this gateway's unused part.

Lease sizes adapt: a key starts with leases of 1 (one call per request, as ``exact``)
and doubles its lease each time one was used up within its lifetime, up to
``max_lease``; it halves when one expires unused. Quiet keys never hold much.

When Redis fails, unused leases are still spent (they are counted already); beyond
them the store answers `RedisStore.fallback` (``on_redis_error``) without awaiting
while Redis is being skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from kairos_core import Decision, Limit

from .redis_store import RedisStore, StoreUnavailable

__all__ = ["BatchedStore", "max_lease"]

#: Expired entries dropped from the cold end per new lease (as `MemoryStore`).
_SWEEP_PER_LEASE = 2
#: Lease rounds one check waits through before it gives up on a crowded key (each
#: round grants at least one request or remembers a refusal; a check passes over only
#: when other checks took every grant of this many rounds in a row).
_MAX_ROUNDS = 16


def max_lease(limit: Limit, batch_size: int) -> int:
    """The largest lease for ``limit``: ``batch_size``, and at most a tenth of the
    quota (of the capacity, for a smaller bucket), so no gateway holds much of a key."""
    return max(1, min(batch_size, min(limit.limit, limit.capacity) // 10))


class _Entry:
    """One key's lease in this gateway."""

    __slots__ = (
        "denied_until",
        "expires",
        "pending",
        "remaining",
        "reset_at",
        "retry_at",
        "size",
        "tokens",
        "waiting",
        "window",
    )

    def __init__(self) -> None:
        self.tokens = 0  # leased, not used yet
        self.expires = -1.0  # the tokens are spent until then
        self.remaining = 0  # the shared count's remaining at the last lease
        self.reset_at = 0.0
        self.retry_at = 0.0
        self.denied_until = -1.0  # a refusal is repeated until then
        self.window = 0  # the fixed window the tokens belong to
        self.size = 1  # the next lease asks for this many (adapted)
        self.waiting = 0  # checks awaiting the pending lease
        self.pending: asyncio.Task[BaseException | None] | None = None


class BatchedStore:
    """Leases over a `RedisStore` (which it shares, and does not close)."""

    def __init__(
        self,
        redis: RedisStore,
        *,
        batch_size: int = 100,
        sync_interval_s: float = 1.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1 or max_keys < 1 or not sync_interval_s > 0:
            raise ValueError("batch_size and max_keys must be at least 1, the interval > 0")
        self.redis = redis
        self.batch_size = batch_size
        self.sync_interval_s = sync_interval_s
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tasks: set[asyncio.Task[BaseException | None]] = set()
        #: Script calls made (leases taken or refused), for tests and benchmarks.
        self.leases = 0
        #: Entries dropped because the cap was reached (their unused leases are lost).
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check_nowait(self, key: str, limit: Limit) -> Decision | None:
        """From the key's lease or remembered refusal; the fallback while Redis is
        skipped; else None (await `check`)."""
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None:
            if entry.tokens > 0 and now < entry.expires:
                entry.tokens -= 1
                # A key busy enough to have grown its lease gets the next one before
                # this one runs out (a key seen once does not: no call for nothing).
                if entry.size > 1 and entry.tokens <= entry.size >> 1 and entry.pending is None:
                    self._start(key, entry, limit)
                reset = entry.reset_at - now
                return Decision(True, entry.remaining + entry.tokens, reset if reset > 0 else 0.0)
            if now < entry.denied_until:
                reset = entry.reset_at - now
                return Decision(False, 0, reset if reset > 0 else 0.0, entry.retry_at - now)
        if not self.redis.healthy:
            return self.redis.fallback(limit, None)
        return None

    async def check(self, key: str, limit: Limit) -> Decision:
        for _ in range(_MAX_ROUNDS):
            decision = self.check_nowait(key, limit)
            if decision is not None:
                return decision
            entry = self._entry(key)
            task = entry.pending or self._start(key, entry, limit)
            entry.waiting += 1
            try:
                # Shielded: one check being cancelled must not cancel the others' lease.
                failure = await asyncio.shield(task)
            finally:
                entry.waiting -= 1
            if failure is not None:
                return self.redis.fallback(limit, failure)
        now = self._clock()
        entry = self._entry(key)
        return Decision(False, 0, max(0.0, entry.reset_at - now), self.sync_interval_s)

    def _entry(self, key: str) -> _Entry:
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry()
            now = self._clock()
            for _ in range(_SWEEP_PER_LEASE):
                oldest = next(iter(entries.values()))
                if oldest is entry or oldest.pending is not None:
                    break
                if max(oldest.expires, oldest.denied_until) > now:
                    break
                entries.popitem(last=False)
            while len(entries) > self.max_keys:
                entries.popitem(last=False)
                self.evictions += 1
        else:
            entries.move_to_end(key)
        return entry

    def _start(self, key: str, entry: _Entry, limit: Limit) -> asyncio.Task[BaseException | None]:
        task = asyncio.get_running_loop().create_task(self._lease(key, entry, limit))
        entry.pending = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _lease(self, key: str, entry: _Entry, limit: Limit) -> BaseException | None:
        """Take the key's next lease into ``entry``; the failure, if Redis failed."""
        try:
            now = self._clock()
            cap = max_lease(limit, self.batch_size)
            give_back = 0
            if entry.tokens > 0 and now >= entry.expires:
                give_back, entry.tokens = entry.tokens, 0
                entry.size = max(1, entry.size >> 1)  # expired unused: ask for less
            elif now < entry.expires:
                entry.size = min(cap, entry.size << 1)  # used up or running low in time
            want = min(max(entry.size, entry.waiting), cap - entry.tokens)
            if want < 1:
                return None
            self.leases += 1
            try:
                got = await self.redis.lease(key, limit, want, give_back, entry.window)
            except StoreUnavailable as exc:
                return exc.__cause__ or exc
            now = self._clock()
            entry.remaining = got.remaining
            entry.reset_at = now + got.reset_after_s
            if got.granted:
                lifetime = self.sync_interval_s
                if limit.algorithm == "fixed_window":
                    lifetime = min(lifetime, got.reset_after_s)  # never into the next window
                entry.tokens += got.granted
                entry.expires = now + lifetime
                entry.window = got.window
                entry.denied_until = -1.0
            else:
                entry.retry_at = now + got.retry_after_s
                entry.denied_until = now + min(self.sync_interval_s, got.retry_after_s)
            return None
        finally:
            entry.pending = None

    async def aclose(self) -> None:
        """Stop leases in flight and forget every lease (the requests they hold are
        counted in Redis until the window ends or the bucket refills)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
