"""Rate limiting of a route (``rate_limit``, top level or per route).

Runs after JWT (lower priority), so a limit keyed by user sees the verified subject.
The RateLimit fields go on whatever response follows, a refusal included.
"""

from __future__ import annotations

from collections.abc import Awaitable

from kairos_core import Decision, ServiceUnavailable, TooManyRequests

from ..chain import Policy, Request
from ..metrics import RouteStats
from ..ratelimit import RateLimiter, limit_key

__all__ = ["RateLimitPolicy"]


class RateLimitPolicy(Policy):
    name = "rate_limit"
    priority = 910

    __slots__ = ("limiter", "stats", "template")

    def __init__(self, limiter: RateLimiter, *, template: str, stats: RouteStats) -> None:
        self.limiter = limiter
        self.template = template
        self.stats = stats

    def on_request(self, request: Request) -> Awaitable[None] | None:
        claims = request.claims
        subject = claims.get("sub") if claims is not None else None
        limiter = self.limiter
        key = limit_key(
            limiter.config.key,
            client_ip=request.client_ip,
            user=subject if isinstance(subject, str) else None,
            route_template=self.template,
            headers=request.headers,
        )
        decision = limiter.check_nowait(key)
        if decision is None:
            return self._checked_later(request, key)
        self._judge(request, decision)
        return None

    async def _checked_later(self, request: Request, key: str) -> None:
        self._judge(request, await self.limiter.check(key))

    def _judge(self, request: Request, decision: Decision) -> None:
        fields = self.limiter.headers(decision)
        if decision.allowed:
            request.response_headers.extend(fields)
            return
        # Retry-After comes with the error itself.
        request.response_headers.extend(f for f in fields if f[0] != "Retry-After")
        self.stats.rate_limited += 1
        if decision.store_error:
            raise ServiceUnavailable("the rate limiter's store is unavailable")
        raise TooManyRequests("rate limit exceeded", retry_after_s=decision.retry_after_s)
