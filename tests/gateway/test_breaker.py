"""The circuit breaker state machine, driven by a fake clock."""

from typing import Any

import pytest
from kairos_core import CircuitBreakerConfig
from kairos_gateway.breaker import CircuitBreaker, Permit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**settings: Any) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        CircuitBreakerConfig(**settings),
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )
    return breaker, clock, changes


def admit(breaker: CircuitBreaker) -> Permit:
    permit = breaker.acquire()
    assert permit is not None
    return permit


def run(breaker: CircuitBreaker, clock: Clock, script: str) -> None:
    """Steps: ``ok``/``fail`` (admit one request and settle it), ``deny`` (acquire is
    refused), ``+N`` (N seconds pass)."""
    for step in script.split():
        if step.startswith("+"):
            clock.now += float(step[1:])
        elif step == "deny":
            assert breaker.acquire() is None
        elif step == "ok":
            admit(breaker).success()
        elif step == "fail":
            admit(breaker).failure()
        else:
            raise AssertionError(step)


# Transitions as on_change reports them.
OPEN, PROBE, CLOSE = ("closed", "open"), ("open", "half_open"), ("half_open", "closed")
REOPEN = ("half_open", "open")
ONE = {"failure_threshold": 1}
ONE_OF_3 = {"failure_threshold": 1, "success_threshold": 3}


def state_of(breaker: CircuitBreaker) -> str:
    # Through a function, so mypy does not narrow the property between reads.
    return breaker.state


@pytest.mark.parametrize(
    ("settings", "script", "state", "changes"),
    [
        ({}, "", "closed", []),
        ({"failure_threshold": 3}, "fail fail", "closed", []),
        ({"failure_threshold": 3}, "fail fail fail deny", "open", [OPEN]),
        # Only consecutive failures count: a success in between starts over.
        ({"failure_threshold": 3}, "fail fail ok fail fail", "closed", []),
        (ONE, "fail deny +29.9 deny", "open", [OPEN]),
        # Reading the state after the timeout says half-open; the transition (and its
        # log line) happens when a probe is admitted.
        (ONE, "fail +30", "half_open", [OPEN]),
        (ONE, "fail +30 ok ok", "closed", [OPEN, PROBE, CLOSE]),
        # A probe failure re-opens, with a fresh timeout from that moment.
        (ONE, "fail +30 fail +29 deny", "open", [OPEN, PROBE, REOPEN]),
        (ONE, "fail +30 fail +30", "half_open", [OPEN, PROBE, REOPEN]),
        (ONE_OF_3, "fail +30 ok ok", "half_open", [OPEN, PROBE]),
        (ONE_OF_3, "fail +30 ok ok ok", "closed", [OPEN, PROBE, CLOSE]),
        (ONE_OF_3, "fail +30 ok ok fail", "open", [OPEN, PROBE, REOPEN]),
        # Closing starts the failure count from zero.
        ({"failure_threshold": 2}, "fail fail +30 ok fail", "closed", [OPEN, PROBE, CLOSE]),
        ({**ONE, "reset_timeout_s": 0.5}, "fail +0.5 ok", "closed", [OPEN, PROBE, CLOSE]),
    ],
)
def test_transitions(
    settings: dict[str, Any], script: str, state: str, changes: list[tuple[str, str]]
) -> None:
    breaker, clock, seen = make(**settings)
    run(breaker, clock, script)
    assert state_of(breaker) == state
    assert seen == changes


def test_open_is_lazy_and_side_effect_free_until_asked() -> None:
    breaker, clock, changes = make(failure_threshold=1, reset_timeout_s=10)
    run(breaker, clock, "fail")
    assert (breaker.available(), breaker.retry_after_s()) == (False, 10)
    clock.now += 4
    assert breaker.retry_after_s() == 6
    clock.now += 6
    # available() says a probe would go through but does not change state.
    assert breaker.available() is True
    assert changes == [OPEN]
    assert breaker.retry_after_s() == 0
    # Reading the state (as /ready, /metrics and /api/backends do) changes nothing...
    assert state_of(breaker) == "half_open"
    assert breaker.state_value == 2
    assert changes == [OPEN]
    # ...admitting the first probe makes the transition.
    admit(breaker)
    assert changes == [OPEN, PROBE]
    assert state_of(breaker) == "half_open"


@pytest.mark.parametrize(("state", "value"), [("closed", 0), ("open", 1), ("half_open", 2)])
def test_state_value(state: str, value: int) -> None:
    breaker, clock, _ = make(failure_threshold=1)
    run(breaker, clock, {"closed": "", "open": "fail", "half_open": "fail +30"}[state])
    assert (breaker.state, breaker.state_value) == (state, value)


@pytest.mark.parametrize("max_calls", [1, 3])
def test_half_open_admits_only_the_configured_probes(max_calls: int) -> None:
    breaker, clock, _ = make(
        failure_threshold=1, half_open_max_calls=max_calls, success_threshold=9
    )
    run(breaker, clock, "fail +30")
    probes = [admit(breaker) for _ in range(max_calls)]
    assert all(p.probe for p in probes)
    assert breaker.acquire() is None
    assert breaker.available() is False
    probes[0].success()  # frees its slot (success_threshold not reached yet)
    assert breaker.available() is True
    probes[0] = admit(breaker)
    assert breaker.acquire() is None
    probes[-1].release()  # no verdict, but the slot is free again
    assert state_of(breaker) == "half_open"
    assert admit(breaker).probe


def test_closed_permits_are_not_probes_and_unlimited() -> None:
    breaker, _, _ = make(half_open_max_calls=1)
    permits = [admit(breaker) for _ in range(100)]
    assert not any(p.probe for p in permits)


def test_release_counts_neither_way() -> None:
    breaker, clock, _ = make(failure_threshold=2)
    run(breaker, clock, "fail")
    admit(breaker).release()
    run(breaker, clock, "fail")
    assert state_of(breaker) == "open"  # the release did not reset the streak


@pytest.mark.parametrize(
    ("codes", "status", "state"),
    [
        ([], 500, "closed"),  # by default a 5xx says the backend is up
        ([], 503, "closed"),
        ([502, 503], 503, "open"),
        ([502, 503], 500, "closed"),
        ([502, 503], 200, "closed"),
    ],
)
def test_failure_status_codes(codes: list[int], status: int, state: str) -> None:
    breaker, _, _ = make(failure_threshold=1, failure_status_codes=codes)
    admit(breaker).response(status)
    assert state_of(breaker) == state


def test_settling_twice_counts_once() -> None:
    breaker, _, _ = make(failure_threshold=2)
    permit = admit(breaker)
    permit.failure()
    permit.failure()
    permit.success()
    assert state_of(breaker) == "closed"
    admit(breaker).failure()
    assert state_of(breaker) == "open"


def test_stale_permits_do_not_corrupt_the_new_state() -> None:
    breaker, clock, changes = make(failure_threshold=2, reset_timeout_s=10)
    slow_fail, slow_ok = admit(breaker), admit(breaker)
    run(breaker, clock, "fail fail")  # opens while the slow ones are in flight
    clock.now += 5
    slow_fail.failure()  # issued while closed: does not push the reset timeout out
    assert breaker.retry_after_s() == 5
    clock.now += 5
    probe = admit(breaker)
    slow_ok.success()  # a late success from the closed epoch cannot close the breaker
    assert state_of(breaker) == "half_open"
    assert breaker.acquire() is None  # ... nor free the probe slot
    probe.failure()
    clock.now += 10
    new_probe = admit(breaker)
    probe.release()  # already settled: no effect
    assert breaker.acquire() is None
    new_probe.success()
    assert state_of(breaker) == "closed"
    assert changes == [OPEN, PROBE, REOPEN, PROBE, CLOSE]


def test_stale_probe_outcome_after_closing_is_ignored() -> None:
    breaker, clock, _ = make(failure_threshold=1, half_open_max_calls=2)
    run(breaker, clock, "fail +30")
    first, second = admit(breaker), admit(breaker)
    first.success()  # closes (success_threshold 1)
    second.failure()  # from the half-open epoch: the closed breaker ignores it
    assert state_of(breaker) == "closed"


def test_reconfigure_keeps_state_and_applies_new_thresholds() -> None:
    breaker, clock, _ = make(failure_threshold=5, reset_timeout_s=30)
    run(breaker, clock, "fail fail")
    breaker.reconfigure(CircuitBreakerConfig(failure_threshold=3, reset_timeout_s=5))
    assert state_of(breaker) == "closed"
    run(breaker, clock, "fail")
    assert state_of(breaker) == "open"
    assert breaker.retry_after_s() == 5
    assert breaker.config.failure_threshold == 3


def test_without_listener() -> None:
    breaker = CircuitBreaker(CircuitBreakerConfig(failure_threshold=1), clock=lambda: 0.0)
    admit(breaker).failure()
    assert state_of(breaker) == "open"
