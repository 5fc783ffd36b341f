"""Outlier detection (passive health): real requests eject a backend that keeps failing.

Each `BackendState` has an `Outlier`. The request path reports every try's outcome
(`forward.Attempt`): an answer below 500 is `success` (nothing to do in the usual
case: the streaks are already 0), a 5xx answer `server_error`, a try with no answer
`failure`. A streak reaching its threshold ejects the backend: `BackendState.available`
turns false until ``until``, so balancers skip it. The ejection lasts the base time
doubled per ejection in a row (capped); the backend then returns on *probation* for
as long as it was out, during which a single failure ejects it again, for longer.

Nothing here runs on a timer: "ejected" and "on probation" are comparisons of the
clock with ``until`` and ``probation_until``, so reading them changes nothing, and the
return needs no task (the same rule as the breaker's, docs/decisions.md 18).

The share limit (``max_ejection_percent``) is per route while states are shared
between routes: each outlier knows the route *groups* it belongs to in the live
snapshot (set when the snapshot is activated), and an ejection happens only if every
group stays within its own limit and keeps another backend in rotation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from kairos_core import OutlierDetectionConfig

from .metrics import BackendStats

__all__ = ["Group", "Member", "Outlier"]

log = logging.getLogger("kairos.gateway")


class Member(Protocol):
    """A backend of a route group (`BackendState` fits)."""

    @property
    def outlier(self) -> Outlier: ...
    def available(self) -> bool: ...


#: One route's backends and the most of them that may be ejected at once.
Group = tuple[tuple[Member, ...], int]


class Outlier:
    """The outlier-detection state of one backend (see the module docstring).

    ``clock`` is monotonic seconds (the registry's). ``failures`` counts tries in a
    row without an answer; ``errors`` counts those and 5xx answers in a row, so it is
    0 exactly when both streaks are: the request path tests ``errors`` alone.
    """

    __slots__ = (
        "_clock",
        "address",
        "config",
        "errors",
        "failures",
        "groups",
        "on_change",
        "probation_until",
        "reason",
        "since",
        "stats",
        "times",
        "until",
    )

    def __init__(
        self,
        address: str,
        config: OutlierDetectionConfig,
        stats: BackendStats,
        *,
        clock: Callable[[], float],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        #: Called after an ejection starts, or is ended early by a new configuration
        #: (an ejection running out is a comparison with the clock: no call).
        self.on_change = on_change
        self.config = config
        self.stats = stats
        self._clock = clock
        self.failures = 0
        self.errors = 0
        #: Route groups of the live snapshot (empty until one is activated).
        self.groups: tuple[Group, ...] = ()
        #: The last ejection: why, from when, until when (monotonic; 0: never).
        self.reason: str | None = None
        self.since = 0.0
        self.until = 0.0
        self.probation_until = 0.0
        #: Ejections in a row (the doubling); back to 0 after a clean probation.
        self.times = 0

    # -- reading (no side effects) ----------------------------------------------------

    def ejected(self) -> bool:
        return self.until > 0.0 and self.until > self._clock()

    def on_probation(self) -> bool:
        now = self._clock()
        return self.until <= now < self.probation_until

    def remaining_s(self) -> float:
        return max(0.0, self.until - self._clock()) if self.until else 0.0

    # -- outcomes ---------------------------------------------------------------------

    def success(self) -> None:
        """An answer below 500 (the request path calls this only when ``errors``)."""
        self.failures = 0
        self.errors = 0

    def server_error(self) -> None:
        """A 5xx answer: it ends the no-answer streak and, with ``count_5xx`` on,
        extends the 5xx streak (off, it counts as any other answer)."""
        self.failures = 0
        config = self.config
        if not config.count_5xx:
            self.errors = 0
            return
        self.errors += 1
        if self.errors >= config.consecutive_5xx or self._probation_failure():
            self._eject("5xx")

    def failure(self, kind: str) -> None:
        """A try that got no answer: ``kind`` is the upstream error's (connect, timeout,
        reset, tls, protocol, error)."""
        self.failures += 1
        self.errors += 1
        config = self.config
        if (
            self.failures >= config.consecutive_failures
            or (config.count_5xx and self.errors >= config.consecutive_5xx)
            or self._probation_failure()
        ):
            self._eject(kind)

    # -- settings ---------------------------------------------------------------------

    def reconfigure(self, config: OutlierDetectionConfig, groups: tuple[Group, ...]) -> None:
        """Apply a snapshot's settings as it goes live. A running ejection keeps its end
        time unless detection was turned off, which ends it."""
        self.config = config
        self.groups = groups
        if not config.enabled and self.ejected():
            self.until = self.probation_until = self._clock()
            log.info("backend ejection ended", extra={"fields": {"backend": self.address}})
            if self.on_change is not None:
                self.on_change()

    # -- internals --------------------------------------------------------------------

    def _probation_failure(self) -> bool:
        return self.until > 0.0 and self.on_probation()

    def _eject(self, kind: str) -> None:
        config = self.config
        if not config.enabled or self.ejected() or not self._share_allows():
            return
        now = self._clock()
        probation = self.until <= now < self.probation_until
        # A probation passed without failing wipes the slate: the next ejection is short.
        self.times = self.times + 1 if probation else 1
        duration = config.ejection_s(self.times)
        self.reason = "probation" if probation else kind
        self.since = now
        self.until = now + duration
        self.probation_until = self.until + duration
        self.failures = 0
        self.errors = 0
        self.stats.ejections += 1
        log.warning(
            "backend ejected",
            extra={
                "fields": {
                    "backend": self.address,
                    "reason": self.reason,
                    "seconds": duration,
                    "times_in_a_row": self.times,
                    "wall_until": round(time.time() + duration, 3),
                }
            },
        )
        if self.on_change is not None:
            self.on_change()

    def _share_allows(self) -> bool:
        """Would every route using this backend stay within its ejection limit and keep
        another backend in rotation?"""
        for members, most in self.groups:
            ejected = sum(1 for m in members if m.outlier.ejected())
            if ejected >= most:
                return False
            if not any(m.outlier is not self and m.available() for m in members):
                return False
        return True
