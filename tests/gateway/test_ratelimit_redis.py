"""The Redis store against a real redis-server (started per test on an unused port)."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from kairos_core import Decision, Limit, LimitState, RateLimitConfig, check_limit
from kairos_gateway.ratelimit import RateLimiter, RedisStore
from redis.asyncio import Redis

from tests.redis_server import RedisServer, running_redis

#: Each failing check must come back within the timeout plus this much.
MARGIN_S = 1.0  # generous: the point is "bounded", not a latency target
TIMEOUT_MS = 100
#: Limits used where real time passes: windows so long none ends during a test.
LONG = 1e6


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def arrivals(seed: int, count: int, mean_gap: float) -> list[float]:
    """Bursts, gaps, a clock standing still and a clock stepping back."""
    rng = random.Random(seed)
    now = 1_700_000_000.0 + rng.random() * 1000
    times = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.3:
            pass  # the same instant
        elif roll < 0.33:
            now -= rng.random() * mean_gap * 3  # a step back
        elif roll < 0.35:
            now += mean_gap * 500  # a long gap
        else:
            now += rng.expovariate(1 / mean_gap)
        times.append(now)
    return times


LIMITS = [
    Limit("fixed_window", 5, 1.0, 5),
    Limit("fixed_window", 7, 2.5, 7),
    Limit("sliding_window", 5, 1.0, 5),
    Limit("sliding_window", 20, 60.0, 20, subwindows=6),
    Limit("token_bucket", 3, 1.0, 10),
    Limit("token_bucket", 1, 2.0, 1),
]


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: f"{limit.algorithm}-{limit.limit}")
async def test_each_script_matches_the_pure_maths(
    redis_server: RedisServer, redis: Redis, limit: Limit
) -> None:
    clock = FakeClock()
    store = RedisStore(redis_server.url, key_prefix="t:", clock=clock, timeout_ms=2000)
    state: LimitState | None = None
    mean_gap = limit.window_s / limit.limit
    try:
        for now in arrivals(seed=limit.limit, count=400, mean_gap=mean_gap):
            clock.now = now
            expected, state = check_limit(limit, state, now)
            assert await store.check("k", limit) == expected, f"at {now!r}"
            # The fake clock runs apart from Redis's, which must not expire keys here.
            await redis.persist("t:k")
    finally:
        await store.aclose()
    assert store.errors == 0


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "token_bucket"])
async def test_two_stores_share_one_limit_exactly_under_concurrent_load(
    redis_server: RedisServer, algorithm: str
) -> None:
    limit = Limit(algorithm, 50, LONG, 50)  # type: ignore[arg-type]
    stores = [RedisStore(redis_server.url, timeout_ms=2000) for _ in range(2)]
    try:
        decisions = await asyncio.gather(
            *(stores[i % 2].check("shared", limit) for i in range(300))
        )
    finally:
        for store in stores:
            await store.aclose()
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 50
    assert sorted(d.remaining for d in allowed) == list(range(50))
    assert not any(d.store_error for d in decisions)


async def test_keys_carry_the_prefix_and_a_ttl(redis_server: RedisServer, redis: Redis) -> None:
    store = RedisStore(redis_server.url, key_prefix="gw1:rl:")
    limiter = RateLimiter(
        RateLimitConfig.model_validate(
            {"requests_per_second": 10, "backend": "redis", "redis_url": redis_server.url}
        ),
        store,
        name="api",
    )
    try:
        assert limiter.check_nowait("ip:1.2.3.4") is None  # Redis must be awaited
        decision = await limiter.check("ip:1.2.3.4")
    finally:
        await store.aclose()
    assert decision == Decision(True, 9, pytest.approx(0.1))  # type: ignore[arg-type]
    assert await redis.keys("*") == [b"gw1:rl:token_bucket:api:ip:1.2.3.4"]
    ttl_ms = await redis.pttl("gw1:rl:token_bucket:api:ip:1.2.3.4")
    assert 0 < ttl_ms <= 100
    assert limiter.headers(decision)[1] == ("RateLimit", '"api";r=9;t=1')


async def test_a_flushed_script_cache_is_reloaded(redis_server: RedisServer, redis: Redis) -> None:
    store = RedisStore(redis_server.url)
    limit = Limit("fixed_window", 3, LONG, 3)
    try:
        assert (await store.check("k", limit)).remaining == 2
        await redis.script_flush()  # as after a Redis restart: NOSCRIPT on EVALSHA
        assert (await store.check("k", limit)).remaining == 1
    finally:
        await store.aclose()
    assert store.errors == 0


async def timed_check(store: RedisStore, limit: Limit) -> tuple[Decision, float]:
    started = time.monotonic()
    decision = await store.check("k", limit)
    return decision, time.monotonic() - started


async def wait_until_healthy(store: RedisStore, limit: Limit, timeout_s: float = 10.0) -> Decision:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        decision = await store.check("k", limit)
        if not decision.store_error:
            return decision
        await asyncio.sleep(0.02)
    raise AssertionError(f"the store did not recover within {timeout_s}s")


@pytest.mark.parametrize("on_error", ["allow", "deny"])
async def test_redis_killed_gives_the_fallback_fast_then_recovers(
    redis_server: RedisServer, on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(
        redis_server.url,
        timeout_ms=TIMEOUT_MS,
        on_error=on_error,  # type: ignore[arg-type]
        retry_interval_s=0.05,
    )
    limit = Limit("fixed_window", 100, LONG, 100)
    try:
        assert (await store.check("k", limit)).remaining == 99
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="kairos.gateway"):
            results = [await timed_check(store, limit) for _ in range(20)]
        for decision, elapsed in results:
            assert decision.store_error
            assert decision.allowed is (on_error == "allow")
            assert elapsed < TIMEOUT_MS / 1000 + MARGIN_S
        assert store.errors == 20
        assert not store.healthy
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # rate limited, not one per request
        assert "unavailable" in warnings[0].getMessage()
        assert ("allowing" if on_error == "allow" else "refusing") in warnings[0].getMessage()

        redis_server.start()  # same port, empty memory, no scripts loaded
        recovered = await wait_until_healthy(store, limit)
        assert (recovered.allowed, recovered.remaining) == (True, 99)
    finally:
        await store.aclose()


async def test_a_hung_redis_costs_one_timeout_not_a_hang(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, timeout_ms=TIMEOUT_MS, retry_interval_s=0.05)
    limit = Limit("sliding_window", 10, LONG, 10)
    try:
        assert not (await store.check("k", limit)).store_error
        redis_server.pause()  # accepts bytes, never answers
        try:
            decisions = await asyncio.gather(*(timed_check(store, limit) for _ in range(50)))
            for decision, elapsed in decisions:
                assert decision.store_error
                assert decision.allowed
                assert elapsed < TIMEOUT_MS / 1000 + MARGIN_S
            later, elapsed = await timed_check(store, limit)
            assert later.store_error
            assert elapsed < TIMEOUT_MS / 1000 + MARGIN_S
        finally:
            redis_server.resume()
        recovered = await wait_until_healthy(store, limit)
        # The counts made before the hang are still there. A check that timed out
        # may still have been counted when Redis came back (its command was sent).
        assert recovered.remaining in (7, 8)
    finally:
        await store.aclose()


async def test_unreachable_redis_from_the_start_never_raises() -> None:
    with running_redis() as server:
        url = server.url
    # the server is gone: nothing listens on its port
    store = RedisStore(url, timeout_ms=TIMEOUT_MS, on_error="deny")
    try:
        decision, elapsed = await timed_check(store, Limit("token_bucket", 1, 1.0, 1))
    finally:
        await store.aclose()
    assert decision == Decision(False, 0, 0.5, 1.0, store_error=True)
    assert elapsed < TIMEOUT_MS / 1000 + MARGIN_S


async def test_a_burst_beyond_the_pool_queues_instead_of_failing(
    redis_server: RedisServer,
) -> None:
    # More concurrent checks than connections: they wait their turn for a connection;
    # that wait is not Redis failing, so no check falls back and the count is exact.
    store = RedisStore(redis_server.url, timeout_ms=TIMEOUT_MS, max_connections=4)
    limit = Limit("fixed_window", 50, LONG, 50)  # no window ends during the burst
    try:
        decisions = await asyncio.gather(*(store.check("burst", limit) for _ in range(200)))
    finally:
        await store.aclose()
    assert not any(d.store_error for d in decisions)
    assert sum(d.allowed for d in decisions) == 50
    assert store.errors == 0
