"""When to retry a failed try, how long to wait, and how many retries a route may spend.

Pure decisions with injected clocks; the request path does the retrying. A retry is
only ever considered before any byte of the response reached the client.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Literal

from kairos_core import RetryConfig

__all__ = [
    "IDEMPOTENT",
    "RetryBudget",
    "RetryPolicy",
    "Stop",
    "decide_stale",
    "parse_retry_after",
]

#: Methods whose replay is safe by definition (RFC 9110 9.2.2), CONNECT and PATCH aside.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: Why a request is not tried again. Only ``budget_exhausted`` is counted in metrics
#: (``kairos_retries_total{reason="budget_exhausted"}``); the rest are configuration.
Stop = Literal[
    "no_policy", "max_retries", "method", "connection_error", "deadline", "budget_exhausted"
]


def decide_stale(method: str, replayed: bool, budget: RetryBudget | None) -> Stop | None:
    """May a request whose reused connection was found closed (`StaleConnection`) be
    sent again, at once, to the same backend? None: yes.

    Once per request and for idempotent methods only, with or without a retry policy
    (the backend never saw the request, or cannot tell it apart from a lost one), and
    paid from the route's retry budget like any retry.
    """
    if replayed:
        return "max_retries"
    if method not in IDEMPOTENT:
        return "method"
    if budget is not None and not budget.try_spend():
        return "budget_exhausted"
    return None


class RetryPolicy:
    """A route's `RetryConfig`, precomputed for the request path.

    ``wall_clock`` (epoch seconds) is only read to turn an HTTP-date ``Retry-After``
    into a delay.
    """

    __slots__ = (
        "_initial_s",
        "_max_s",
        "_multiplier",
        "_non_idempotent",
        "_statuses",
        "_wall_clock",
        "max_retries",
        "retry_on_connection_error",
    )

    def __init__(self, config: RetryConfig, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.max_retries = config.max_retries
        self.retry_on_connection_error = config.retry_on_connection_error
        self._non_idempotent = config.retry_non_idempotent
        self._statuses = frozenset(config.retryable_status_codes)
        self._initial_s = config.initial_backoff_ms / 1000
        self._max_s = config.max_backoff_ms / 1000
        self._multiplier = config.backoff_multiplier
        self._wall_clock = wall_clock

    def method_allowed(self, method: str) -> bool:
        """May a request with ``method`` be replayed at all?"""
        return self._non_idempotent or method in IDEMPOTENT

    def status_retryable(self, status: int) -> bool:
        """Is an upstream response with ``status`` worth another try (e.g. 502/503/504)?"""
        return status in self._statuses

    def decide(
        self,
        method: str,
        retries: int,
        *,
        failed: bool,
        retry_after: str | None,
        budget: RetryBudget | None,
        now: float,
        deadline: float | None,
        rng: random.Random,
    ) -> float | Stop:
        """The one retry decision: the pause before the next try, or why there is none.

        ``retries`` is how many were already made; ``failed`` is True for a connection
        error or timeout, False for a retryable status (whose ``Retry-After``, if any,
        sets the pause). The budget is asked last, so a retry refused for another
        reason does not use it up.
        """
        if retries >= self.max_retries:
            return "max_retries"
        if not self.method_allowed(method):
            return "method"
        if failed and not self.retry_on_connection_error:
            return "connection_error"
        delay = self.retry_after_s(retry_after) if retry_after is not None else None
        if delay is None:
            delay = self.backoff_s(retries, rng)
        if deadline is not None and now + delay >= deadline:
            return "deadline"
        if budget is not None and not budget.try_spend():
            return "budget_exhausted"
        return delay

    def backoff_s(self, retry_number: int, rng: random.Random) -> float:
        """Pause before retry ``retry_number`` (0 for the first retry), in seconds.

        Full jitter: uniform over ``[0, min(max_backoff, initial * multiplier ** n)]``.
        Spreading retries over the whole interval keeps clients that failed together
        from retrying together (AWS Architecture Blog, "Exponential Backoff And Jitter").
        """
        try:
            ceiling = self._initial_s * self._multiplier**retry_number
        except OverflowError:
            ceiling = math.inf
        return rng.uniform(0.0, min(self._max_s, ceiling))

    def retry_after_s(self, header_value: str | None) -> float | None:
        """An upstream ``Retry-After`` as a delay in seconds, at most ``max_backoff_ms``
        (see `parse_retry_after`); None means the computed backoff applies."""
        delay = parse_retry_after(header_value, self._wall_clock)
        return None if delay is None else min(delay, self._max_s)


def parse_retry_after(header_value: str | None, wall_clock: Callable[[], float]) -> float | None:
    """A ``Retry-After`` value as a delay in seconds: delta-seconds (``"120"``) or an
    HTTP-date (a past date gives 0; ``wall_clock``, epoch seconds, is read only for a
    date). None when absent or unparseable (a negative or fractional number included)."""
    if header_value is None:
        return None
    value = header_value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # HTTP-dates are GMT; a date without a zone is not one
    return max(0.0, when.timestamp() - wall_clock())


class RetryBudget:
    """Caps a route's retries at a share of its requests over a sliding window.

    A retry may be spent while ``retries < max(min_retries, ratio * requests)``, both
    counted over the last ``window_s`` seconds. ``on_request`` counts a client request
    (once, not per try); ``try_spend`` asks for, and on success records, one retry.
    The window is a ring of `BUCKETS` buckets, so it slides in steps of
    ``window_s / BUCKETS``; ``clock`` is monotonic seconds.
    """

    BUCKETS = 10

    __slots__ = (
        "_clock",
        "_min_retries",
        "_ratio",
        "_requests",
        "_requests_total",
        "_retries",
        "_retries_total",
        "_slot",
        "_width",
    )

    def __init__(
        self, ratio: float, min_retries: int, window_s: float, *, clock: Callable[[], float]
    ) -> None:
        if not 0 <= ratio <= 1 or min_retries < 0 or window_s <= 0:
            raise ValueError("need 0 <= ratio <= 1, min_retries >= 0 and window_s > 0")
        self._ratio = ratio
        self._min_retries = min_retries
        self._width = window_s / self.BUCKETS
        self._clock = clock
        self._requests = [0] * self.BUCKETS
        self._retries = [0] * self.BUCKETS
        self._requests_total = 0
        self._retries_total = 0
        self._slot = int(clock() / self._width)

    @classmethod
    def from_config(cls, config: RetryConfig, *, clock: Callable[[], float]) -> RetryBudget:
        return cls(
            config.budget_ratio, config.budget_min_retries, config.budget_window_s, clock=clock
        )

    def on_request(self) -> None:
        """Count one client request to the route."""
        index = self._advance()
        self._requests[index] += 1
        self._requests_total += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and nothing recorded) when exhausted."""
        index = self._advance()
        if self._retries_total >= max(self._min_retries, self._ratio * self._requests_total):
            return False
        self._retries[index] += 1
        self._retries_total += 1
        return True

    @property
    def requests(self) -> int:
        """Requests counted in the current window."""
        self._advance()
        return self._requests_total

    @property
    def retries(self) -> int:
        """Retries spent in the current window."""
        self._advance()
        return self._retries_total

    def _advance(self) -> int:
        """Expire buckets that slid out of the window; return the current bucket index."""
        slot = int(self._clock() / self._width)
        last = self._slot
        buckets = self.BUCKETS
        if slot > last:
            if slot - last >= buckets:
                self._requests = [0] * buckets
                self._retries = [0] * buckets
                self._requests_total = self._retries_total = 0
            else:
                requests, retries = self._requests, self._retries
                for step in range(last + 1, slot + 1):
                    i = step % buckets
                    self._requests_total -= requests[i]
                    self._retries_total -= retries[i]
                    requests[i] = retries[i] = 0
            self._slot = slot
        # A clock that steps back (only a fake one can) keeps using the newest bucket.
        return self._slot % buckets
