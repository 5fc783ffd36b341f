"""What the ``ai`` plugin keeps across configuration snapshots, one per gateway.

`AiState` holds each target's breaker and latency (a target is a provider's URL and a
model: a provider may throttle one model and serve another), the token budgets (so a
reload keeps what consumers have used), the usage counters and the response caches.
Policies built from a new configuration find the same objects by their settings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kairos_core import CircuitBreakerConfig
from kairos_core.ai import ResponseCacheConfig, TokenLimits

from ..breaker import CircuitBreaker
from ..cache import SharedCache, shared_cache
from .limits import TokenBudget, token_budget
from .usage import AiUsage

__all__ = ["AiState", "TargetState"]

log = logging.getLogger("kairos.gateway")

#: Weight of a new latency observation in the moving average.
_ALPHA = 0.3


class TargetState:
    """One provider URL and model: its breaker, in-flight calls and latency (seconds
    to the response head, exponentially weighted)."""

    __slots__ = ("breaker", "inflight", "label", "latency_s")

    def __init__(self, label: str, breaker: CircuitBreaker) -> None:
        self.label = label
        self.breaker = breaker
        self.inflight = 0
        self.latency_s: float | None = None

    def observe(self, seconds: float) -> None:
        previous = self.latency_s
        self.latency_s = seconds if previous is None else previous + _ALPHA * (seconds - previous)


def _breaker_log(label: str) -> Callable[[str, str], None]:
    def on_change(old: str, new: str) -> None:
        log.warning(
            "ai target circuit breaker changed state",
            extra={"fields": {"target": label, "from": old, "to": new}},
        )

    return on_change


class AiState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.usage = AiUsage()
        self._targets: dict[str, TargetState] = {}
        self._budgets: dict[str, TokenBudget] = {}
        #: Strong references: a cache lives as long as the gateway.
        self._caches: dict[str, SharedCache] = {}

    def target(self, label: str, breaker: CircuitBreakerConfig) -> TargetState:
        found = self._targets.get(label)
        if found is None:
            found = self._targets[label] = TargetState(
                label, CircuitBreaker(breaker, clock=self._clock, on_change=_breaker_log(label))
            )
        else:
            found.breaker.reconfigure(breaker)
        return found

    def targets(self) -> dict[str, TargetState]:
        return dict(self._targets)

    def budget(self, limits: TokenLimits) -> TokenBudget:
        ident = limits.model_dump_json()
        found = self._budgets.get(ident)
        if found is None:
            found = self._budgets[ident] = token_budget(limits)
        return found

    def cache(self, config: ResponseCacheConfig) -> SharedCache:
        ident = config.store.model_dump_json()
        found = self._caches.get(ident)
        if found is None:
            found = self._caches[ident] = shared_cache(config.store)
        return found

    async def aclose(self) -> None:
        for budget in self._budgets.values():
            await budget.aclose()
        for cache in self._caches.values():
            await cache.aclose()
