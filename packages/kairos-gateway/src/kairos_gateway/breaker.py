"""A circuit breaker per backend: a small state machine driven by request outcomes.

::

    closed --(failure_threshold consecutive failures)--> open
    open --(reset_timeout_s elapsed, on the next acquire; no timers)--> half_open
    half_open --(success_threshold consecutive probe successes)--> closed
    half_open --(any probe failure)--> open (a fresh reset timeout)

A request asks `CircuitBreaker.acquire` for a `Permit` before it connects and settles
the permit exactly once: `Permit.success`, `Permit.failure`, `Permit.response` (the
status decides) or `Permit.release` (the outcome says nothing about the backend, e.g.
the client went away). Half-open admits at most ``half_open_max_calls`` permits at a
time; settling a probe permit frees its slot.

Every transition starts a new *epoch*. A permit remembers the epoch it was issued in,
and its outcome is ignored when the breaker has moved on since: a slow request
admitted while closed that fails after the breaker opened neither extends the open
period nor counts against the half-open probes, and its late success cannot close a
breaker that is probing. Only the requests admitted in the current state decide the
next one.

Not pybreaker: it guards a wrapped call under a `threading.RLock`, reads the wall
clock directly, cannot answer "would you admit a request now?" without making the
call, and lets every request through while half-open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

from kairos_core import CircuitBreakerConfig

__all__ = ["STATE_VALUES", "BreakerState", "CircuitBreaker", "Permit"]

BreakerState = Literal["closed", "open", "half_open"]

#: `kairos_circuit_breaker_state` gauge values.
STATE_VALUES: Final[dict[BreakerState, int]] = {"closed": 0, "open": 1, "half_open": 2}


class Permit:
    """Admission of one request; settle it exactly once (later calls are ignored)."""

    __slots__ = ("_breaker", "_epoch", "_settled", "probe")

    def __init__(self, breaker: CircuitBreaker, epoch: int, probe: bool) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._settled = False
        #: True when the permit holds one of the half-open probe slots.
        self.probe = probe

    def success(self) -> None:
        """The backend answered (connect and response headers went fine)."""
        if not self._settled:
            self._settled = True
            self._breaker._on_success(self._epoch, self.probe)

    def failure(self) -> None:
        """The backend failed: connect error, timeout, broken response, or a failure status."""
        if not self._settled:
            self._settled = True
            self._breaker._on_failure(self._epoch, self.probe)

    def response(self, status: int) -> None:
        """Settle by upstream status: a failure if listed in ``failure_status_codes``."""
        if status in self._breaker._failure_statuses:
            self.failure()
        else:
            self.success()

    def release(self) -> None:
        """Settle without a verdict on the backend (e.g. client abort); frees a probe slot."""
        if not self._settled:
            self._settled = True
            if self.probe:
                self._breaker._on_release(self._epoch)


class CircuitBreaker:
    """See the module docstring. Single-threaded (one event loop): no locks.

    ``clock`` is monotonic seconds (`time.monotonic` in production, a fake in tests);
    ``on_change(old, new)`` is called once per transition, after it took effect.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_epoch",
        "_failure_statuses",
        "_failures",
        "_on_change",
        "_opened_at",
        "_probes",
        "_state",
        "_successes",
        "observer",
    )

    def __init__(
        self,
        config: CircuitBreakerConfig,
        *,
        clock: Callable[[], float],
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._epoch = 0
        self._failures = 0  # consecutive, while closed
        self._successes = 0  # consecutive probe successes, while half-open
        self._probes = 0  # probe permits outstanding, while half-open
        self._opened_at = 0.0
        #: A second ``(old, new)`` listener, set after construction (shared breakers).
        self.observer: Callable[[str, str], None] | None = None
        self.reconfigure(config)

    def reconfigure(self, config: CircuitBreakerConfig) -> None:
        """Apply new settings (config reload); state and counts are kept.

        New thresholds take effect at the next outcome, e.g. a closed breaker whose
        failure count already exceeds a lowered threshold opens on its next failure.
        """
        self._config = config
        self._failure_statuses = frozenset(config.failure_status_codes)

    @property
    def config(self) -> CircuitBreakerConfig:
        return self._config

    @property
    def state(self) -> BreakerState:
        """The state a request would meet now: an open breaker whose reset timeout has
        elapsed reads as half-open. Reading changes nothing (no transition, no log
        line); the transition itself happens when `acquire` admits the first probe."""
        if self._state == "open" and self._timeout_elapsed():
            return "half_open"
        return self._state

    @property
    def state_value(self) -> int:
        """0 closed, 1 open, 2 half-open (the metric's encoding)."""
        return STATE_VALUES[self.state]

    def available(self) -> bool:
        """Would `acquire` admit a request now? Changes nothing (balancers call it)."""
        state = self._state
        if state == "closed":
            return True
        if state == "open":
            # Once the timeout elapsed, acquire would go half-open with every slot free.
            return self._timeout_elapsed()
        return self._probes < self._config.half_open_max_calls

    def acquire(self) -> Permit | None:
        """Admit one request, or None when open (or half-open with every probe slot taken)."""
        if self._state == "closed":
            return Permit(self, self._epoch, False)
        if self._state == "open":
            if not self._timeout_elapsed():
                return None
            self._transition("half_open")
        if self._probes >= self._config.half_open_max_calls:
            return None
        self._probes += 1
        return Permit(self, self._epoch, True)

    def force_open(self, duration_s: float) -> bool:
        """Open now for ``duration_s`` (another node found the backend failing), then go
        half-open as usual. Returns False, changing nothing, when already open."""
        if self._state == "open" and not self._timeout_elapsed():
            return False
        self._transition("open")
        # Probes resume after ``duration_s`` rather than a full reset timeout.
        self._opened_at = self._clock() - self._config.reset_timeout_s + max(0.0, duration_s)
        return True

    def retry_after_s(self) -> float:
        """Seconds until an open breaker admits probes again; 0 when not open."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self._config.reset_timeout_s - self._clock())

    # -- outcomes (called by Permit) -----------------------------------------------

    def _on_success(self, epoch: int, probe: bool) -> None:
        if epoch != self._epoch:
            return
        if not probe:
            self._failures = 0
            return
        self._probes -= 1
        self._successes += 1
        if self._successes >= self._config.success_threshold:
            self._transition("closed")

    def _on_failure(self, epoch: int, probe: bool) -> None:
        if epoch != self._epoch:
            return
        if probe:
            self._transition("open")
            return
        self._failures += 1
        if self._failures >= self._config.failure_threshold:
            self._transition("open")

    def _on_release(self, epoch: int) -> None:
        if epoch == self._epoch:
            self._probes -= 1

    # -- internals -----------------------------------------------------------------

    def _timeout_elapsed(self) -> bool:
        return self._clock() - self._opened_at >= self._config.reset_timeout_s

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._epoch += 1
        self._failures = 0
        self._successes = 0
        self._probes = 0
        if new == "open":
            self._opened_at = self._clock()
        if self._on_change is not None:
            self._on_change(old, new)
        if self.observer is not None:
            self.observer(old, new)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._state} epoch={self._epoch}>"
