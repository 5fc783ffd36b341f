"""The rate-limit maths, on an injected clock (every `now` below is an argument)."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable

import pytest
from kairos_core import (
    Decision,
    FixedWindowState,
    Limit,
    LimitState,
    RateLimitConfig,
    SlidingWindowState,
    TokenBucketState,
    check_limit,
    fixed_window,
    sliding_window,
    token_bucket,
)


def run(limit: Limit, times: list[float]) -> list[Decision]:
    state: LimitState | None = None
    out = []
    for now in times:
        decision, state = check_limit(limit, state, now)
        out.append(decision)
    return out


def allowed_flags(limit: Limit, times: list[float]) -> list[bool]:
    return [d.allowed for d in run(limit, times)]


# --- Limit.from_config -------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected", "policy"),
    [
        (
            {"algorithm": "fixed_window", "requests_per_window": 100, "window_seconds": 60},
            Limit("fixed_window", 100, 60.0, 100),
            (100, 60),
        ),
        ({"requests_per_second": 10}, Limit("token_bucket", 10, 1.0, 10), (10, 1)),
        (
            {"requests_per_second": 10, "burst_size": 25},
            Limit("token_bucket", 10, 1.0, 25),
            (10, 1),
        ),
        # burst_size 0: no burst at all, one request at a time
        ({"requests_per_second": 10, "burst_size": 0}, Limit("token_bucket", 10, 1.0, 1), (10, 1)),
        # a fractional rate becomes whole requests over a longer window
        ({"requests_per_second": 0.5}, Limit("token_bucket", 1, 2.0, 1), (1, 2)),
        (
            {"algorithm": "sliding_window", "requests_per_second": 2.5},
            Limit("sliding_window", 5, 2.0, 5),
            (5, 2),
        ),
        # burst only shapes the token bucket
        (
            {"algorithm": "fixed_window", "requests_per_second": 5, "burst_size": 50},
            Limit("fixed_window", 5, 1.0, 5),
            (5, 1),
        ),
        # a fractional window is advertised at the same rate in whole seconds
        (
            {"algorithm": "fixed_window", "requests_per_window": 3, "window_seconds": 1.5},
            Limit("fixed_window", 3, 1.5, 3),
            (6, 3),
        ),
    ],
)
def test_from_config(config: dict[str, object], expected: Limit, policy: tuple[int, int]) -> None:
    limit = Limit.from_config(RateLimitConfig.model_validate(config))
    assert limit == expected
    assert limit.policy() == policy


def test_limit_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Limit("fixed_window", 0, 1.0, 1)
    with pytest.raises(ValueError, match="positive"):
        Limit("fixed_window", 1, 0.0, 1)


# --- fixed window ------------------------------------------------------------------

FIXED = Limit("fixed_window", 3, 10.0, 3)


def test_fixed_window_counts_within_a_window_and_resets_at_the_boundary() -> None:
    decisions = run(FIXED, [100.0, 101.0, 102.5, 105.0, 109.999, 110.0])
    assert [(d.allowed, d.remaining) for d in decisions] == [
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
        (False, 0),
        (True, 2),
    ]
    assert decisions[0].reset_after_s == 10.0
    assert decisions[3].reset_after_s == 5.0
    assert decisions[3].retry_after_s == 5.0
    assert decisions[5].reset_after_s == 10.0
    assert decisions[0].retry_after_s == 0.0


def test_fixed_window_is_aligned_to_the_clock_epoch() -> None:
    # The window is [100, 110) whatever time the first request came.
    decision, state = fixed_window(FIXED, None, 107.0)
    assert state == FixedWindowState(10, 1)
    assert decision.reset_after_s == pytest.approx(3.0)


def test_fixed_window_clock_not_moving() -> None:
    assert allowed_flags(FIXED, [50.0] * 6) == [True] * 3 + [False] * 3


def test_fixed_window_clock_stepping_back_counts_in_the_newer_window() -> None:
    state = FixedWindowState(index=11, count=3)
    decision, after = fixed_window(FIXED, state, 109.0)
    assert not decision.allowed
    assert after == state
    assert decision.reset_after_s == pytest.approx(11.0)


def test_fixed_window_long_gap_starts_afresh() -> None:
    decision, state = fixed_window(FIXED, FixedWindowState(1, 3), 1e9)
    assert decision.allowed
    assert state == FixedWindowState(int(1e8), 1)


# --- sliding window ----------------------------------------------------------------

SLIDING = Limit("sliding_window", 10, 10.0, 10)  # sub-windows of 1 s


def test_sliding_window_burst_then_wait_one_full_window_plus_a_subwindow_at_most() -> None:
    decisions = run(SLIDING, [0.5] * 11 + [10.4, 10.99, 11.0])
    assert [d.allowed for d in decisions] == [True] * 10 + [False, False, False, True]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    denied = decisions[10]
    # sub-window 0 ([0, 1)) stops counting at 11 s
    assert denied.reset_after_s == pytest.approx(10.5)
    assert denied.retry_after_s == pytest.approx(10.5)
    assert decisions[11].retry_after_s == pytest.approx(0.6)


def test_sliding_window_retry_after_is_when_enough_requests_age_out() -> None:
    limit = SLIDING
    state: SlidingWindowState | None = None
    for now in [0.5] * 5 + [5.5] * 5:
        decision, state = sliding_window(limit, state, now)
        assert decision.allowed
    decision, state = sliding_window(limit, state, 6.0)
    assert not decision.allowed
    assert decision.retry_after_s == pytest.approx(5.0)  # sub-window 0 leaves at 11 s
    assert decision.reset_after_s == pytest.approx(10.0)  # sub-window 5 leaves at 16 s
    decision, state = sliding_window(limit, state, 11.0)
    assert (decision.allowed, decision.remaining) == (True, 4)


def test_sliding_window_state_stays_small() -> None:
    state: SlidingWindowState | None = None
    for i in range(1000):
        _, state = sliding_window(SLIDING, state, i * 0.37)
    assert state is not None
    assert len(state.buckets) <= SLIDING.subwindows + 1


def test_sliding_window_clock_not_moving_and_stepping_back() -> None:
    assert allowed_flags(SLIDING, [3.0] * 12) == [True] * 10 + [False] * 2
    # after a step back the newest sub-window is used: nothing leaves early
    flags = allowed_flags(SLIDING, [20.0] * 10 + [5.0, 29.9, 31.0])
    assert flags == [True] * 10 + [False, False, True]


def test_sliding_window_long_gap_forgets_everything() -> None:
    decisions = run(SLIDING, [0.0] * 10 + [1e6])
    assert decisions[-1].allowed
    assert decisions[-1].remaining == 9


def brute_force_arrivals(seed: int, horizon: float, mean_gap: float) -> list[float]:
    rng = random.Random(seed)
    times: list[float] = []
    now = 0.0
    while now < horizon:
        # bursts and gaps: several requests at nearly one instant, then quiet
        now += rng.expovariate(1 / mean_gap) * rng.choice([0.0, 0.1, 1.0, 1.0, 5.0])
        times.append(now)
    return times


@pytest.mark.parametrize(
    ("limit", "window", "subwindows", "seed"),
    [
        (5, 1.0, 10, 1),
        (10, 10.0, 10, 2),
        (3, 2.0, 4, 3),
        (100, 60.0, 10, 4),
        (1, 0.5, 10, 5),
        (7, 3.0, 1, 6),
    ],
)
def test_sliding_window_never_exceeds_the_limit_in_any_window(
    limit: int, window: float, subwindows: int, seed: int
) -> None:
    spec = Limit("sliding_window", limit, window, limit, subwindows)
    times = brute_force_arrivals(seed, horizon=window * 60, mean_gap=window / limit / 2)
    decisions = run(spec, times)
    allowed = [t for t, d in zip(times, decisions, strict=True) if d.allowed]
    assert len(allowed) > limit * 20  # the check below is not vacuous
    # Any window [s, s + W) with the most requests can start at an allowed request.
    for i, start in enumerate(allowed):
        inside = bisect.bisect_left(allowed, start + window) - i
        assert inside <= limit, f"{inside} allowed in [{start}, {start + window})"
    # And it refuses only when a log over W + W/k would be full: the tolerance is
    # on the side of refusing, by at most one sub-window.
    span = window + window / subwindows
    for t, d in zip(times, decisions, strict=True):
        if not d.allowed:
            counted = bisect.bisect_right(allowed, t) - bisect.bisect_left(allowed, t - span)
            assert counted >= limit


# --- token bucket ------------------------------------------------------------------

BUCKET = Limit("token_bucket", 1, 1.0, 5)  # 1 per second, bursts of 5


def test_token_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    decisions = run(BUCKET, [0.0] * 6 + [0.5, 1.0, 1.5, 2.0, 3.0])
    assert [(d.allowed, d.remaining) for d in decisions] == [
        (True, 4),
        (True, 3),
        (True, 2),
        (True, 1),
        (True, 0),
        (False, 0),
        (False, 0),
        (True, 0),
        (False, 0),
        (True, 0),
        (True, 0),
    ]
    denied = decisions[5]
    assert denied.retry_after_s == pytest.approx(1.0)
    assert denied.reset_after_s == pytest.approx(5.0)  # until the bucket is full
    assert decisions[6].retry_after_s == pytest.approx(0.5)
    assert decisions[0].reset_after_s == pytest.approx(1.0)


def test_token_bucket_long_gap_refills_only_to_capacity() -> None:
    decisions = run(BUCKET, [0.0] * 5 + [1e6] * 6)
    assert [d.allowed for d in decisions[5:]] == [True] * 5 + [False]


def test_token_bucket_float_drift_still_makes_whole_tokens() -> None:
    limit = Limit("token_bucket", 10, 1.0, 1)  # no burst: exactly one each 0.1 s
    times = [i * 0.1 for i in range(1, 200)]
    assert all(allowed_flags(limit, [0.0, *times]))


def test_token_bucket_clock_not_moving_or_stepping_back_never_refills() -> None:
    assert allowed_flags(BUCKET, [7.0] * 7) == [True] * 5 + [False] * 2
    state = TokenBucketState(tokens=0.0, updated=10.0)
    decision, after = token_bucket(BUCKET, state, 4.0)
    assert not decision.allowed
    assert after == state
    decision, _ = token_bucket(BUCKET, after, 11.0)
    assert decision.allowed


def test_token_bucket_rate_over_time() -> None:
    limit = Limit("token_bucket", 10, 1.0, 10)
    times = [i * 0.01 for i in range(1000)]  # 100/s offered for 10 s
    assert sum(allowed_flags(limit, times)) == pytest.approx(10 + 10 * 9.99, abs=1)


# --- dispatch ----------------------------------------------------------------------

STATES: list[tuple[Limit, Callable[..., tuple[Decision, LimitState]]]] = [
    (FIXED, fixed_window),
    (SLIDING, sliding_window),
    (BUCKET, token_bucket),
]


@pytest.mark.parametrize(("limit", "function"), STATES)
def test_check_limit_dispatches_and_ignores_a_foreign_state(
    limit: Limit, function: Callable[..., tuple[Decision, LimitState]]
) -> None:
    assert check_limit(limit, None, 3.0) == function(limit, None, 3.0)
    own = type(function(limit, None, 0.0)[1])
    foreign_states = [FixedWindowState(0, 9), SlidingWindowState(((0, 9),)), TokenBucketState(0, 3)]
    for foreign in foreign_states:
        if not isinstance(foreign, own):
            assert check_limit(limit, foreign, 3.0) == function(limit, None, 3.0)
