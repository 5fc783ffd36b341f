"""`MemoryStore`: rate-limit states in this process, bounded in keys and in time."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from kairos_core import Decision, Limit, LimitState, check_limit

__all__ = ["MemoryStore"]

#: Expired entries dropped from the cold end per check, so idle keys leave even when
#: the cap is never reached, at a bounded cost per request.
_SWEEP_PER_CHECK = 2


class MemoryStore:
    """At most ``max_keys`` states, least recently used evicted first.

    An entry expires when its quota has fully reset (`Decision.reset_after_s`): from
    then on an absent state means the same, so dropping it changes no decision.
    Eviction under pressure does change decisions (an evicted client starts afresh):
    size the cap above the number of clients active within one window.
    """

    def __init__(
        self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, LimitState]] = OrderedDict()
        #: States dropped because the cap was reached (a metric worth exporting).
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def check_nowait(self, key: str, limit: Limit) -> Decision:
        now = self._clock()
        entries = self._entries
        entry = entries.get(key)
        state = entry[1] if entry is not None and entry[0] > now else None
        decision, new_state = check_limit(limit, state, now)
        entries[key] = (now + decision.reset_after_s, new_state)
        entries.move_to_end(key)
        for _ in range(_SWEEP_PER_CHECK):
            oldest = next(iter(entries.items()), None)
            if oldest is None or oldest[1][0] > now:
                break
            del entries[oldest[0]]
        while len(entries) > self.max_keys:
            entries.popitem(last=False)
            self.evictions += 1
        return decision

    async def check(self, key: str, limit: Limit) -> Decision:
        return self.check_nowait(key, limit)

    def sweep(self) -> int:
        """Drop every expired entry (O(n); for a periodic task). Returns how many."""
        now = self._clock()
        expired = [key for key, (expires, _) in self._entries.items() if expires <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)

    async def aclose(self) -> None:
        self._entries.clear()
