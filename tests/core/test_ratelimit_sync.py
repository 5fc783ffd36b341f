"""``sync: "batched"``: the lease maths and its config (on an injected clock)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from kairos_core import ConfigError, FixedWindowState, Limit, LimitState, check_limit, load_config
from kairos_core.limits import Lease, lease

REDIS = {"backend": "redis", "redis_url": "redis://localhost:6379"}


def arrivals(seed: int, count: int, gap: float) -> list[float]:
    rng = random.Random(seed)
    now, out = 1_000.0, []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.05:
            now -= rng.random() * gap  # a step back
        elif roll > 0.3:
            now += rng.expovariate(1 / gap)
        out.append(now)
    return out


LIMITS = [Limit("fixed_window", 5, 1.0, 5), Limit("token_bucket", 3, 1.0, 10)]


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.algorithm)
def test_a_lease_of_one_decides_as_a_check(limit: Limit) -> None:
    checked: LimitState | None = None
    leased: LimitState | None = None
    for now in arrivals(seed=7, count=300, gap=limit.window_s / limit.limit):
        decision, checked = check_limit(limit, checked, now)
        got, leased = lease(limit, leased, now, 1)
        assert got.granted == int(decision.allowed)
        assert (got.remaining, got.reset_after_s, got.retry_after_s) == (
            decision.remaining,
            decision.reset_after_s,
            decision.retry_after_s,
        )
        assert leased == checked


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.algorithm)
def test_a_lease_of_n_is_n_checks_at_one_instant(limit: Limit) -> None:
    rng = random.Random(3)
    checked: LimitState | None = None
    leased: LimitState | None = None
    for now in arrivals(seed=11, count=200, gap=limit.window_s):
        want = rng.randint(1, 8)
        allowed = 0
        for _ in range(want):
            decision, checked = check_limit(limit, checked, now)
            allowed += decision.allowed
        got, leased = lease(limit, leased, now, want)
        assert got.granted == allowed
        assert got.remaining == decision.remaining
        assert leased == checked


def test_token_bucket_give_back_refills_up_to_capacity_only() -> None:
    limit = Limit("token_bucket", 10, 1.0, 10)
    got, state = lease(limit, None, 0.0, 8)
    assert got == Lease(8, 2, pytest.approx(0.8))  # type: ignore[arg-type]
    got, state = lease(limit, state, 0.0, 5, give_back=6)  # 2 + 6 back = 8, take 5
    assert (got.granted, got.remaining) == (5, 3)
    got, state = lease(limit, state, 0.0, 1, give_back=100)  # capped at 10
    assert (got.granted, got.remaining) == (1, 9)


def test_fixed_window_give_back_counts_only_in_the_same_window() -> None:
    limit = Limit("fixed_window", 10, 1.0, 10)
    got, state = lease(limit, None, 5.2, 10)
    assert got == Lease(10, 0, pytest.approx(0.8), 0.0, 5)  # type: ignore[arg-type]
    refused, state = lease(limit, state, 5.3, 1)
    assert (refused.granted, refused.retry_after_s) == (0, pytest.approx(0.7))
    got, state = lease(limit, state, 5.4, 2, give_back=4, window=5)
    assert (got.granted, got.remaining) == (2, 2)
    assert state == FixedWindowState(5, 8)
    # Requests of window 5 given back in window 6 change nothing there.
    got, state = lease(limit, state, 6.1, 3, give_back=4, window=5)
    assert (got.granted, got.remaining, got.window) == (3, 7, 6)


def test_leases_refuse_what_they_cannot_mean() -> None:
    with pytest.raises(ValueError, match="no leases for sliding_window"):
        lease(Limit("sliding_window", 5, 1.0, 5), None, 0.0, 1)
    with pytest.raises(ValueError, match="want"):
        lease(LIMITS[0], None, 0.0, 0)


# --- config ----------------------------------------------------------------------------


def limit_config(**fields: Any) -> dict[str, Any]:
    return {"version": 1, "routers": [], "rate_limit": {"requests_per_second": 10, **fields}}


def test_sync_defaults_to_exact() -> None:
    rate_limit = load_config(limit_config()).rate_limit
    assert rate_limit is not None
    assert (rate_limit.sync, rate_limit.batch_size, rate_limit.sync_interval_ms) == (
        "exact",
        100,
        1000,
    )


@pytest.mark.parametrize("algorithm", ["token_bucket", "fixed_window"])
def test_batched_is_accepted_for_leasable_algorithms(algorithm: str) -> None:
    cfg = load_config(
        limit_config(algorithm=algorithm, sync="batched", batch_size=50, **REDIS)
    ).rate_limit
    assert cfg is not None
    assert (cfg.sync, cfg.batch_size) == ("batched", 50)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"algorithm": "sliding_window", "sync": "batched", **REDIS},
            "rate_limit.sync: 'batched' supports algorithm fixed_window or token_bucket, "
            "not sliding_window; use sync 'exact'",
        ),
        (
            {"sync": "batched"},
            "rate_limit.sync: 'batched' needs backend 'redis' (the memory store is exact)",
        ),
        ({"sync": "eventually", **REDIS}, "rate_limit.sync: must be one of: exact, batched"),
        ({"batch_size": 0, **REDIS}, "rate_limit.batch_size: must be between 1 and 10000 (got 0)"),
        (
            {"sync_interval_ms": 5, **REDIS},
            "rate_limit.sync_interval_ms: must be between 10 and 60000 (got 5)",
        ),
    ],
)
def test_batched_config_errors_name_the_field(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(limit_config(**fields))
    messages = [str(e) for e in info.value.errors]
    assert any(m.startswith(error) for m in messages), messages
