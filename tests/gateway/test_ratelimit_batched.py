"""``sync: "batched"``: leases against a real redis-server (started per test)."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from kairos_core import Limit, LimitState, RateLimitConfig
from kairos_core.limits import lease
from kairos_gateway.ratelimit import BatchedStore, RateLimiter, RateLimiters, RedisStore
from kairos_gateway.ratelimit.batched import max_lease
from redis.asyncio import Redis

from tests.redis_server import RedisServer
from tests.support import eventually

#: Windows so long none ends (and no bucket refills a token) during a test.
LONG = 1e6


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "limit",
    [Limit("fixed_window", 20, 1.0, 20), Limit("token_bucket", 5, 1.0, 30)],
    ids=lambda limit: limit.algorithm,
)
async def test_each_lease_script_matches_the_pure_maths(
    redis_server: RedisServer, redis: Redis, limit: Limit
) -> None:
    clock = FakeClock()
    store = RedisStore(redis_server.url, key_prefix="t:", clock=clock, timeout_ms=2000)
    rng = random.Random(5)
    state: LimitState | None = None
    window = 0
    try:
        for _ in range(300):
            clock.now += rng.choice([0.0, rng.expovariate(limit.limit / limit.window_s)])
            want, give_back = rng.randint(1, 12), rng.choice([0, 0, rng.randint(1, 6)])
            expected, state = lease(limit, state, clock.now, want, give_back, window)
            got = await store.lease("k", limit, want, give_back, window)
            assert got == expected, f"at {clock.now!r}"
            window = got.window
            await redis.persist("t:k")  # the fake clock runs apart from Redis's
    finally:
        await store.aclose()
    assert store.errors == 0


def batched_limiter(
    url: str, limit: dict[str, object], *, batch_size: int = 10, interval_ms: int = 1000
) -> tuple[RateLimiter, BatchedStore, RedisStore]:
    config = RateLimitConfig.model_validate(
        {
            **limit,
            "backend": "redis",
            "redis_url": url,
            "sync": "batched",
            "batch_size": batch_size,
            "sync_interval_ms": interval_ms,
        }
    )
    redis = RedisStore(url, timeout_ms=2000)
    store = BatchedStore(redis, batch_size=batch_size, sync_interval_s=interval_ms / 1000)
    return RateLimiter(config, store, name="shared"), store, redis


async def request(limiter: RateLimiter, key: str) -> tuple[bool, bool]:
    """(allowed, answered without an await), as the rate-limit policy asks."""
    decision = limiter.check_nowait(key)
    if decision is not None:
        return decision.allowed, True
    return (await limiter.check(key)).allowed, False


async def test_a_busy_key_is_answered_from_leases_without_awaiting(
    redis_server: RedisServer,
) -> None:
    limiter, store, redis = batched_limiter(
        redis_server.url, {"requests_per_second": 1e6, "burst_size": 10**6}, batch_size=100
    )
    try:
        results = []
        for _ in range(5000):
            results.append(await request(limiter, "ip:1"))
            await asyncio.sleep(0)  # as a gateway does between requests (its I/O)
        await eventually(lambda: not store._tasks)
    finally:
        await store.aclose()
        await redis.aclose()
    assert all(allowed for allowed, _ in results)
    awaited = sum(not sync for _, sync in results)
    # Exact mode awaits all 5,000. Batched awaits while the lease grows from 1 to 100
    # (about 7 doublings) and when a background refill lands late; this loop spends
    # microseconds per request where a gateway spends a few hundred, so allow 1 %.
    assert awaited <= 50
    # A refill tops the lease up to 100 when half of it is left: about 50 per call.
    assert store.leases <= 5000 / 50 + 20
    assert redis.errors == 0


async def test_a_key_seen_once_costs_one_call_and_holds_nothing(
    redis_server: RedisServer, redis: Redis
) -> None:
    limiter, store, store_redis = batched_limiter(
        redis_server.url,
        {"algorithm": "fixed_window", "requests_per_window": 100, "window_seconds": LONG},
    )
    try:
        for i in range(20):
            assert await request(limiter, f"ip:10.0.0.{i}") == (True, False)
        assert not store._tasks  # no lease taken ahead for a key that may not return
        assert store.leases == 20
        counts = [await redis.hget(k, "c") for k in await redis.keys("kairos:rl:*")]
        assert counts == [b"1"] * 20
    finally:
        await store.aclose()
        await store_redis.aclose()


@pytest.mark.parametrize("algorithm", ["fixed_window", "token_bucket"])
async def test_two_gateways_share_one_limit_within_the_bound(
    redis_server: RedisServer, algorithm: str
) -> None:
    # Two gateways (own pools, own leases) hammer one key concurrently. Nothing passes
    # over the limit (no window ends, no token refills during the test) and at most one
    # lease per gateway stays unused (the early refusals the leases can cause).
    quota = 300
    fields = {"algorithm": algorithm, "requests_per_window": quota, "window_seconds": LONG}
    gateways = [batched_limiter(redis_server.url, fields, batch_size=20) for _ in range(2)]
    cap = max_lease(gateways[0][0].limit, 20)

    async def client(limiter: RateLimiter) -> list[bool]:
        out = []
        for _ in range(200):
            out.append((await request(limiter, "route:/shared"))[0])
            await asyncio.sleep(0)
        return out

    try:
        results = await asyncio.gather(*(client(gateways[i % 2][0]) for i in range(8)))
    finally:
        for _, store, redis in gateways:
            await store.aclose()
            await redis.aclose()
    allowed = sum(sum(r) for r in results)
    assert quota - 2 * cap <= allowed <= quota
    assert sum(store.leases for _, store, _ in gateways) < 1600 / 4
    assert not any(redis.errors for _, _, redis in gateways)


async def test_a_bucket_overshoots_by_at_most_one_lease_per_gateway(
    redis_server: RedisServer, redis: Redis
) -> None:
    # The worst case: gateway A leases and sits on its lease while the bucket refills;
    # then B takes the whole bucket and A spends its lease. Redis's clock and the
    # gateways' clocks are fake, so the refill is exact.
    redis_clock, local = FakeClock(), FakeClock(0.0)
    limit = Limit("token_bucket", 100, 1.0, 100)
    cap = max_lease(limit, 50)  # a tenth of the capacity: 10
    stores = []
    for _ in range(2):
        shared = RedisStore(redis_server.url, clock=redis_clock, timeout_ms=2000)
        stores.append(BatchedStore(shared, batch_size=50, sync_interval_s=60, clock=local))
    a, b = stores
    try:
        # A grows its lease to the cap with a few requests ...
        for _ in range(8):
            assert (await a.check("k", limit)).allowed
            await eventually(lambda: not a._tasks)
        held = a._entries["k"].tokens
        assert 0 < held <= cap
        # ... then the bucket refills while A holds its lease.
        redis_clock.now += 10.0
        burst = 0
        while (decision := await b.check("k", limit)).allowed:
            burst += 1
        assert not decision.store_error
        while (decision := a.check_nowait("k", limit)) is not None and decision.allowed:
            burst += 1
        assert burst == limit.capacity + held
        assert burst <= limit.capacity + cap
    finally:
        for store in stores:
            await store.aclose()
            await store.redis.aclose()


async def test_a_refusal_is_remembered_without_asking_redis(redis_server: RedisServer) -> None:
    limiter, store, redis = batched_limiter(
        redis_server.url,
        {"algorithm": "fixed_window", "requests_per_window": 3, "window_seconds": LONG},
    )
    try:
        assert [await request(limiter, "ip:1") for _ in range(3)] == [(True, False)] * 3
        refused = await limiter.check("ip:1")
        calls = store.leases
        assert not refused.allowed
        again = limiter.check_nowait("ip:1")
        assert again is not None
        assert not again.allowed
        assert not again.store_error
        assert store.leases == calls
        fields = dict(limiter.headers(again))
        assert fields["RateLimit"].startswith('"shared";r=0;t=')  # t: the window's end
        assert int(fields["Retry-After"]) > 1
    finally:
        await store.aclose()
        await redis.aclose()


@pytest.mark.parametrize("on_error", ["allow", "deny"])
async def test_redis_down_spends_the_lease_then_falls_back_then_recovers(
    redis_server: RedisServer, on_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit = Limit("fixed_window", 1000, LONG, 1000)
    shared = RedisStore(
        redis_server.url,
        timeout_ms=100,
        on_error=on_error,  # type: ignore[arg-type]
        retry_interval_s=0.05,
    )
    store = BatchedStore(shared, batch_size=50)
    try:
        for _ in range(40):  # grow the lease to the cap
            decision = store.check_nowait("k", limit) or await store.check("k", limit)
            assert decision.allowed
            assert not decision.store_error
        await eventually(lambda: not store._tasks)
        held = store._entries["k"].tokens
        assert held > 0
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="kairos.gateway"):
            spent = [store.check_nowait("k", limit) for _ in range(held)]
            assert all(d is not None and d.allowed and not d.store_error for d in spent)
            await eventually(lambda: not store._tasks)  # the background refill failed
            after = store.check_nowait("k", limit) or await store.check("k", limit)
        assert after.store_error
        assert after.allowed is (on_error == "allow")
        assert shared.errors >= 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1

        redis_server.start()  # empty: the count starts afresh

        async def recovered() -> bool:
            decision = store.check_nowait("k", limit) or await store.check("k", limit)
            return not decision.store_error

        await eventually(recovered)
    finally:
        await store.aclose()
        await shared.aclose()


async def test_keys_are_bounded_and_close_stops_leases_in_flight(
    redis_server: RedisServer,
) -> None:
    limit = Limit("token_bucket", 1000, 1.0, 1000)
    shared = RedisStore(redis_server.url, timeout_ms=2000)
    store = BatchedStore(shared, max_keys=5)
    try:
        for i in range(12):
            assert (await store.check(f"k{i}", limit)).allowed
        assert len(store) == 5
        assert store.evictions == 7
        redis_server.pause()  # a lease now hangs until closed
        waiting = asyncio.ensure_future(store.check("k-new", limit))
        await eventually(lambda: store._tasks)
        await store.aclose()
        assert not store._tasks
        assert len(store) == 0
        assert waiting.done()
    finally:
        redis_server.resume()
        await shared.aclose()


async def test_the_registry_builds_batched_stores_on_one_pool(redis_server: RedisServer) -> None:
    limiters = RateLimiters()
    base = {"requests_per_second": 100, "backend": "redis", "redis_url": redis_server.url}
    exact = limiters.get(RateLimitConfig.model_validate(base))
    batched = limiters.get(RateLimitConfig.model_validate({**base, "sync": "batched"}), name="b")
    other = limiters.get(
        RateLimitConfig.model_validate({**base, "sync": "batched", "batch_size": 5}), name="c"
    )
    try:
        assert isinstance(exact.store, RedisStore)
        assert isinstance(batched.store, BatchedStore)
        assert isinstance(other.store, BatchedStore)
        assert batched.store is not other.store
        assert batched.store.redis is exact.store is other.store.redis
        decision = await batched.check("ip:1")
        assert decision.allowed
        assert dict(batched.headers(decision))["RateLimit"] == '"b";r=99;t=1'
    finally:
        await limiters.aclose()
