"""Rate-limit maths: pure functions of (limit, state, now) returning a `Decision` and the
new state. No clock, no I/O; the stores in the gateway hold the states and supply
``now`` (the Redis store runs the same maths as Lua scripts, on Redis's clock).

A limit allows ``limit`` requests per ``window_s`` seconds (`Limit.from_config`
turns a fractional rate into whole requests: 0.5/s becomes 1 per 2 s).

* **Fixed window** -- windows aligned to multiples of ``window_s`` since the clock's
  epoch (so processes sharing a clock share windows); at most ``limit`` per window.
  Two adjacent windows can let ``2 * limit`` through around their boundary, which
  is what a fixed window means.

* **Sliding window** -- counted in ``k`` sub-windows of ``window_s / k`` seconds
  (default k = 10). A request is allowed when the requests allowed in the current
  sub-window and the ``k`` before it number fewer than ``limit``. Those k + 1
  sub-windows always cover the last ``window_s`` seconds, so **no interval of
  ``window_s`` seconds ever contains more than ``limit`` allowed requests** (no
  tolerance above the limit). The price is on the other side: a request stays
  counted for up to ``window_s * (1 + 1/k)`` seconds, so a client can be refused
  at most ``window_s / k`` seconds earlier than an exact log would refuse it.
  Memory is at most k + 1 counters per key, whatever the limit. (The popular
  "weighted previous + current window" estimate was rejected: it assumes the
  previous window's requests were spread evenly and, when they were not, lets
  nearly ``2 * limit`` through in one window.)

* **Token bucket** -- a bucket of ``capacity`` tokens, full at first, refilled at
  ``limit / window_s`` tokens per second; each request takes one. ``capacity`` is
  ``burst_size`` when given (``burst_size: 0`` means 1: no burst, strict pacing),
  otherwise ``limit``. So up to ``capacity`` requests pass at once, then one every
  ``window_s / limit`` seconds.

`Decision` fields follow draft-ietf-httpapi-ratelimit-headers: ``remaining`` is the
quota left now; ``reset_after_s`` is the time until the quota fully resets (window
end; the moment every counted request has aged out; the bucket is full again),
which is also how long the state matters: after it, an absent state is equivalent.
``retry_after_s`` (denials only) is the time until the next request would pass if
nothing else arrives. A clock that steps backwards is treated as standing still.

**Leases** (``sync: "batched"``): `lease_fixed_window` and `lease_token_bucket` take up
to ``want`` requests at once, as ``want`` checks in a row at the same instant would
(with ``want == 1`` they decide exactly as `fixed_window` / `token_bucket`). A lease
may first give back ``give_back`` requests an earlier lease took and never used: to a
token bucket as tokens (capped at its capacity), to a fixed window only while it is
the lease's own window. A gateway then answers from its lease without asking again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .ratelimit import RateLimitAlgorithm, RateLimitConfig

__all__ = [
    "SLIDING_SUBWINDOWS",
    "Decision",
    "FixedWindowState",
    "Lease",
    "Limit",
    "LimitState",
    "SlidingWindowState",
    "TokenBucketState",
    "check_limit",
    "fixed_window",
    "lease",
    "lease_fixed_window",
    "lease_token_bucket",
    "sliding_window",
    "token_bucket",
]

SLIDING_SUBWINDOWS = 10
#: Slack for float drift in refilled tokens (0.1 s * 10/s must make a whole token).
TOKEN_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit's parameters, normalised to a whole number of requests per window."""

    algorithm: RateLimitAlgorithm
    limit: int
    window_s: float
    capacity: int
    subwindows: int = SLIDING_SUBWINDOWS

    def __post_init__(self) -> None:
        if self.limit < 1 or self.capacity < 1 or self.subwindows < 1:
            raise ValueError("limit, capacity and subwindows must be at least 1")
        if not self.window_s > 0:
            raise ValueError("window_s must be positive")

    @classmethod
    def from_config(cls, config: RateLimitConfig) -> Limit:
        quota = Fraction(config.quota).limit_denominator(1000)
        window = config.window_s * quota.denominator
        limit = max(1, quota.numerator)
        if config.burst_size is not None and config.algorithm == "token_bucket":
            capacity = max(1, config.burst_size)
        else:
            capacity = limit
        return cls(config.algorithm, limit, window, capacity)

    @property
    def rate_per_s(self) -> float:
        return self.limit / self.window_s

    def policy(self) -> tuple[int, int]:
        """``(q, w)`` for RateLimit-Policy: whole requests per whole seconds.

        A fractional window is scaled up at the same rate (3 per 1.5 s -> 6 per 3 s).
        """
        window = Fraction(self.window_s).limit_denominator(1000)
        return self.limit * window.denominator, max(1, window.numerator)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check. ``store_error``: the store failed and this is the
    configured fallback (``on_redis_error``), not a counted decision."""

    allowed: bool
    remaining: int
    reset_after_s: float
    retry_after_s: float = 0.0
    store_error: bool = False


@dataclass(frozen=True, slots=True)
class FixedWindowState:
    index: int
    count: int


@dataclass(frozen=True, slots=True)
class SlidingWindowState:
    #: ``(sub-window index, requests allowed in it)``, oldest first, non-zero counts.
    buckets: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class TokenBucketState:
    tokens: float
    updated: float


LimitState = FixedWindowState | SlidingWindowState | TokenBucketState


def fixed_window(
    limit: Limit, state: FixedWindowState | None, now: float
) -> tuple[Decision, FixedWindowState]:
    window = limit.window_s
    index = math.floor(now / window)
    count = 0
    if state is not None and state.index >= index:
        index, count = state.index, state.count
    reset = (index + 1) * window - now
    if count < limit.limit:
        count += 1
        return Decision(True, limit.limit - count, reset), FixedWindowState(index, count)
    return Decision(False, 0, reset, reset), FixedWindowState(index, count)


def sliding_window(
    limit: Limit, state: SlidingWindowState | None, now: float
) -> tuple[Decision, SlidingWindowState]:
    k = limit.subwindows
    size = limit.window_s / k
    index = math.floor(now / size)
    buckets = state.buckets if state is not None else ()
    if buckets and buckets[-1][0] > index:
        index = buckets[-1][0]
    live = [(j, c) for j, c in buckets if j >= index - k]
    total = sum(c for _, c in live)
    if total < limit.limit:
        if live and live[-1][0] == index:
            live[-1] = (index, live[-1][1] + 1)
        else:
            live.append((index, 1))
        total += 1
        reset = (index + k + 1) * size - now
        return Decision(True, limit.limit - total, reset), SlidingWindowState(tuple(live))
    reset = (live[-1][0] + k + 1) * size - now
    retry = reset
    running = total
    for j, c in live:
        running -= c
        if running < limit.limit:
            retry = (j + k + 1) * size - now
            break
    return Decision(False, 0, reset, retry), SlidingWindowState(tuple(live))


def _refilled(limit: Limit, state: TokenBucketState | None, now: float) -> tuple[float, float]:
    """The bucket's tokens and update time, refilled up to ``now`` (full when new)."""
    if state is None:
        return float(limit.capacity), now
    tokens, updated = state.tokens, state.updated
    if now > updated:
        return min(float(limit.capacity), tokens + (now - updated) * limit.rate_per_s), now
    return tokens, updated


def token_bucket(
    limit: Limit, state: TokenBucketState | None, now: float
) -> tuple[Decision, TokenBucketState]:
    rate = limit.rate_per_s
    capacity = limit.capacity
    tokens, updated = _refilled(limit, state, now)
    if tokens >= 1 - TOKEN_EPSILON:
        tokens = max(0.0, tokens - 1)
        decision = Decision(True, math.floor(tokens), (capacity - tokens) / rate)
    else:
        decision = Decision(False, 0, (capacity - tokens) / rate, (1 - tokens) / rate)
    return decision, TokenBucketState(tokens, updated)


def check_limit(limit: Limit, state: LimitState | None, now: float) -> tuple[Decision, LimitState]:
    """Dispatch on ``limit.algorithm``; a state of another algorithm counts as absent."""
    if limit.algorithm == "fixed_window":
        fixed = state if isinstance(state, FixedWindowState) else None
        return fixed_window(limit, fixed, now)
    if limit.algorithm == "sliding_window":
        sliding = state if isinstance(state, SlidingWindowState) else None
        return sliding_window(limit, sliding, now)
    bucket = state if isinstance(state, TokenBucketState) else None
    return token_bucket(limit, bucket, now)


@dataclass(frozen=True, slots=True)
class Lease:
    """Requests taken at once: ``granted`` of the ``want`` asked (0: refused).

    ``remaining``, ``reset_after_s`` and ``retry_after_s`` are as in `Decision`, after
    the grant. ``window`` is the fixed window's index (0 for a token bucket): a later
    lease gives unused requests back only to the same window.
    """

    granted: int
    remaining: int
    reset_after_s: float
    retry_after_s: float = 0.0
    window: int = 0


def lease_fixed_window(
    limit: Limit,
    state: FixedWindowState | None,
    now: float,
    want: int,
    give_back: int = 0,
    window: int = 0,
) -> tuple[Lease, FixedWindowState]:
    size = limit.window_s
    index = math.floor(now / size)
    count = 0
    if state is not None and state.index >= index:
        index, count = state.index, state.count
    if give_back > 0 and window == index:
        count = max(0, count - give_back)
    reset = (index + 1) * size - now
    if count < limit.limit:
        granted = min(want, limit.limit - count)
        count += granted
        return Lease(granted, limit.limit - count, reset, 0.0, index), FixedWindowState(
            index, count
        )
    return Lease(0, 0, reset, reset, index), FixedWindowState(index, count)


def lease_token_bucket(
    limit: Limit, state: TokenBucketState | None, now: float, want: int, give_back: int = 0
) -> tuple[Lease, TokenBucketState]:
    rate = limit.rate_per_s
    capacity = limit.capacity
    tokens, updated = _refilled(limit, state, now)
    if give_back > 0:
        tokens = min(float(capacity), tokens + give_back)
    if tokens >= 1 - TOKEN_EPSILON:
        granted = min(want, math.floor(tokens + TOKEN_EPSILON))
        tokens = max(0.0, tokens - granted)
        result = Lease(granted, math.floor(tokens), (capacity - tokens) / rate)
    else:
        result = Lease(0, 0, (capacity - tokens) / rate, (1 - tokens) / rate)
    return result, TokenBucketState(tokens, updated)


def lease(
    limit: Limit,
    state: LimitState | None,
    now: float,
    want: int,
    give_back: int = 0,
    window: int = 0,
) -> tuple[Lease, LimitState]:
    """Dispatch on ``limit.algorithm`` (fixed window or token bucket only)."""
    if want < 1 or give_back < 0:
        raise ValueError("want must be at least 1 and give_back at least 0")
    if limit.algorithm == "fixed_window":
        fixed = state if isinstance(state, FixedWindowState) else None
        return lease_fixed_window(limit, fixed, now, want, give_back, window)
    if limit.algorithm == "token_bucket":
        bucket = state if isinstance(state, TokenBucketState) else None
        return lease_token_bucket(limit, bucket, now, want, give_back)
    raise ValueError(f"no leases for {limit.algorithm}")
