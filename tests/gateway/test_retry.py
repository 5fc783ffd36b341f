"""Retry policy decisions and the retry budget, with seeded RNGs and fake clocks."""

import random
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from kairos_core import RetryConfig
from kairos_gateway.retry import IDEMPOTENT, RetryBudget, RetryPolicy

NOW = 1_700_000_000.0  # wall clock for HTTP-date parsing


class Clock:
    def __init__(self, now: float = 50.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(**settings: Any) -> RetryPolicy:
    return RetryPolicy(RetryConfig(**settings), wall_clock=lambda: NOW)


# -- policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "non_idempotent", "allowed"),
    [
        ("GET", False, True),
        ("HEAD", False, True),
        ("OPTIONS", False, True),
        ("PUT", False, True),
        ("DELETE", False, True),
        ("TRACE", False, True),
        ("POST", False, False),
        ("PATCH", False, False),
        ("CONNECT", False, False),
        ("POST", True, True),
        ("PATCH", True, True),
    ],
)
def test_method_allowed(method: str, non_idempotent: bool, allowed: bool) -> None:
    assert policy(retry_non_idempotent=non_idempotent).method_allowed(method) is allowed


def test_idempotent_set() -> None:
    assert frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}) == IDEMPOTENT


@pytest.mark.parametrize(
    ("codes", "status", "retryable"),
    [
        (None, 502, True),
        (None, 503, True),
        (None, 504, True),
        (None, 500, False),
        (None, 200, False),
        ([500, 429], 429, True),
        ([500, 429], 503, False),
    ],
)
def test_status_retryable(codes: list[int] | None, status: int, retryable: bool) -> None:
    settings = {} if codes is None else {"retryable_status_codes": codes}
    assert policy(**settings).status_retryable(status) is retryable


def test_fields_copied() -> None:
    p = policy(max_retries=7, retry_on_connection_error=False)
    assert (p.max_retries, p.retry_on_connection_error) == (7, False)
    assert (policy().max_retries, policy().retry_on_connection_error) == (3, True)


@pytest.mark.parametrize(
    ("settings", "retry_number", "ceiling"),
    [
        ({}, 0, 0.1),  # initial 100 ms
        ({}, 1, 0.2),  # x2
        ({}, 3, 0.8),
        ({}, 6, 5.0),  # 6.4 s capped by max_backoff_ms 5000
        ({}, 10, 5.0),
        ({"backoff_multiplier": 1.0}, 9, 0.1),
        ({"initial_backoff_ms": 0}, 5, 0.0),
        ({"backoff_multiplier": 1e300, "max_backoff_ms": 700}, 10, 0.7),  # no overflow
        ({"initial_backoff_ms": 250, "max_backoff_ms": 250}, 0, 0.25),
    ],
)
def test_backoff_bounds(settings: dict[str, Any], retry_number: int, ceiling: float) -> None:
    p = policy(**settings)
    rng = random.Random(retry_number)
    samples = [p.backoff_s(retry_number, rng) for _ in range(2_000)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter covers the whole interval, not just its top.
    assert max(samples) == pytest.approx(ceiling, abs=ceiling * 0.01 + 1e-12)
    assert min(samples) == pytest.approx(0.0, abs=ceiling * 0.01 + 1e-12)


def test_backoff_jitter_is_uniform_and_seeded() -> None:
    p = policy(initial_backoff_ms=1000, max_backoff_ms=1000)
    samples = [p.backoff_s(0, random.Random(9)) for _ in range(3)]
    assert len(set(samples)) == 1  # same seed, same pause
    rng = random.Random(123)
    values = [p.backoff_s(0, rng) for _ in range(20_000)]
    deciles = [0] * 10
    for value in values:
        deciles[min(9, int(value * 10))] += 1
    assert all(1_800 < d < 2_200 for d in deciles), deciles
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.01)


def test_backoff_grows_on_average() -> None:
    p = policy()
    rng = random.Random(5)
    means = [sum(p.backoff_s(n, rng) for _ in range(4_000)) / 4_000 for n in range(5)]
    assert means == sorted(means)
    assert means[4] == pytest.approx(0.8, rel=0.05)  # half of 1.6 s


def http_date(offset_s: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset_s, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("2", 2.0),
        (" 3 ", 3.0),
        ("120", 5.0),  # capped at max_backoff_ms
        ("99999999999999999999999", 5.0),
        (http_date(4), 4.0),
        (http_date(3600), 5.0),
        (http_date(-30), 0.0),  # a date in the past: go ahead now
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("-5", None),
        ("1.5", None),  # delta-seconds is an integer
        ("soon", None),
        ("", None),
        ("٣", None),  # a non-ASCII digit is not delta-seconds
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
        ("Wed, 99 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    got = policy().retry_after_s(header)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_retry_after_cap_follows_config() -> None:
    assert policy(initial_backoff_ms=0, max_backoff_ms=0).retry_after_s("10") == 0.0


# -- budget ---------------------------------------------------------------------------


def spend(budget: RetryBudget, attempts: int) -> int:
    return sum(budget.try_spend() for _ in range(attempts))


@pytest.mark.parametrize(
    ("ratio", "floor", "requests", "granted"),
    [
        (0.2, 3, 0, 3),  # a quiet route may still retry up to the floor
        (0.2, 3, 10, 3),  # 20 % of 10 = 2 < floor
        (0.2, 3, 100, 20),
        (0.2, 0, 100, 20),
        (0.2, 0, 0, 0),
        (0.0, 0, 1000, 0),
        (0.0, 5, 1000, 5),
        (1.0, 0, 40, 40),
        (0.25, 1, 10, 3),  # 2.5 allowed: the third retry starts below the limit
    ],
)
def test_budget_floor_and_ratio(ratio: float, floor: int, requests: int, granted: int) -> None:
    budget = RetryBudget(ratio, floor, 10, clock=Clock())
    for _ in range(requests):
        budget.on_request()
    assert spend(budget, 1_000) == granted
    assert (budget.requests, budget.retries) == (requests, granted)


def test_budget_window_slides() -> None:
    clock = Clock()
    budget = RetryBudget(0.1, 0, 10, clock=clock)  # buckets of 1 s
    for _ in range(100):
        budget.on_request()
    assert spend(budget, 50) == 10
    clock.now += 5
    for _ in range(100):
        budget.on_request()
    assert spend(budget, 50) == 10  # 200 requests in the window: 20 retries in total
    clock.now += 5  # the first 100 requests and their 10 retries slide out
    assert (budget.requests, budget.retries) == (100, 10)
    assert spend(budget, 50) == 0
    clock.now += 5
    assert (budget.requests, budget.retries) == (0, 0)
    clock.now += 1000  # a long idle gap clears everything at once
    budget.on_request()
    assert (budget.requests, budget.retries) == (1, 0)


def test_budget_buckets_are_a_fraction_of_the_window() -> None:
    clock = Clock(0.0)
    budget = RetryBudget(1.0, 0, 0.5, clock=clock)  # ten buckets of 50 ms
    budget.on_request()
    clock.now = 0.449
    budget.on_request()
    assert budget.requests == 2
    clock.now = 0.5  # the first bucket (0-50 ms) leaves the window
    assert budget.requests == 1
    clock.now = 0.95
    assert budget.requests == 0


def test_budget_ignores_a_clock_stepping_back() -> None:
    clock = Clock()
    budget = RetryBudget(1.0, 0, 10, clock=clock)
    budget.on_request()
    clock.now -= 30
    budget.on_request()
    assert budget.try_spend()
    assert (budget.requests, budget.retries) == (2, 1)


def test_budget_from_config() -> None:
    config = RetryConfig(budget_ratio=0.5, budget_min_retries=0, budget_window_s=2)
    budget = RetryBudget.from_config(config, clock=Clock())
    for _ in range(4):
        budget.on_request()
    assert spend(budget, 10) == 2


@pytest.mark.parametrize(
    ("ratio", "floor", "window"), [(-0.1, 0, 1), (1.1, 0, 1), (0.2, -1, 1), (0.2, 0, 0)]
)
def test_budget_rejects_bad_arguments(ratio: float, floor: int, window: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio, floor, window, clock=Clock())
