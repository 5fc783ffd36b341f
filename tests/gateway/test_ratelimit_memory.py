"""Limiters over the memory store: decisions, keys, exact header fields, bounded memory."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest
from kairos_core import Decision, RateLimitConfig
from kairos_gateway.ratelimit import MemoryStore, RateLimiter, RateLimiters, RedisStore, limit_key
from tornado.httputil import HTTPHeaders


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(**fields: Any) -> RateLimitConfig:
    return RateLimitConfig.model_validate(fields)


def limiter_with_clock(clock: FakeClock, **fields: Any) -> RateLimiter:
    return RateLimiter(config(**fields), MemoryStore(clock=clock), name=fields.pop("name", "api"))


FIXED_3_PER_MIN = {"algorithm": "fixed_window", "requests_per_window": 3, "window_seconds": 60}


# --- decisions and headers ---------------------------------------------------------


def test_fixed_window_headers_exactly() -> None:
    clock = FakeClock(1030.0)  # half-way through the window [1020, 1080)
    limiter = limiter_with_clock(clock, **FIXED_3_PER_MIN)
    first = limiter.check_nowait("ip:10.0.0.1")
    assert first is not None
    assert limiter.headers(first) == [
        ("RateLimit-Policy", '"api";q=3;w=60'),
        ("RateLimit", '"api";r=2;t=50'),
    ]
    limiter.check_nowait("ip:10.0.0.1")
    limiter.check_nowait("ip:10.0.0.1")
    clock.now = 1079.2
    denied = limiter.check_nowait("ip:10.0.0.1")
    assert denied is not None
    assert not denied.allowed
    assert limiter.headers(denied) == [
        ("RateLimit-Policy", '"api";q=3;w=60'),
        ("RateLimit", '"api";r=0;t=1'),
        ("Retry-After", "1"),
    ]
    clock.now = 1080.0
    assert limiter.check_nowait("ip:10.0.0.1") == Decision(True, 2, 60.0)


def test_legacy_headers_and_config_name() -> None:
    clock = FakeClock(0.0)
    limiter = limiter_with_clock(
        clock, requests_per_second=2, burst_size=4, legacy_headers=True, name="burst"
    )
    decisions = [limiter.check_nowait("k") for _ in range(5)]
    assert [d.allowed for d in decisions if d] == [True] * 4 + [False]
    last_allowed, denied = decisions[3], decisions[4]
    assert last_allowed is not None
    assert denied is not None
    # a full bucket (4 tokens) is 2 s away at 2 tokens/s
    assert limiter.headers(last_allowed) == [
        ("RateLimit-Policy", '"burst";q=2;w=1'),
        ("RateLimit", '"burst";r=0;t=2'),
        ("X-RateLimit-Limit", "2"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "2"),
    ]
    assert limiter.headers(denied)[-1] == ("Retry-After", "1")


def test_policy_name_from_the_config_wins() -> None:
    limiter = RateLimiter(config(requests_per_second=1, name="gold"), MemoryStore(), name="/x")
    assert limiter.name == "gold"
    assert limiter.headers(Decision(True, 0, 1.0))[0] == ("RateLimit-Policy", '"gold";q=1;w=1')


def test_fractional_rates_advertise_whole_numbers() -> None:
    limiter = RateLimiter(config(requests_per_second=0.5), MemoryStore(), name="slow")
    assert limiter.headers(Decision(True, 0, 1.5)) == [
        ("RateLimit-Policy", '"slow";q=1;w=2'),
        ("RateLimit", '"slow";r=0;t=2'),
    ]


def test_store_failure_headers_carry_only_what_is_known() -> None:
    limiter = RateLimiter(config(requests_per_second=5), MemoryStore(), name="api")
    allowed = Decision(True, 5, 0.0, store_error=True)
    assert limiter.headers(allowed) == [("RateLimit-Policy", '"api";q=5;w=1')]
    denied = Decision(False, 0, 0.5, 0.5, store_error=True)
    assert limiter.headers(denied) == [
        ("RateLimit-Policy", '"api";q=5;w=1'),
        ("Retry-After", "1"),
    ]


async def test_async_check_is_the_same_count() -> None:
    clock = FakeClock()
    limiter = limiter_with_clock(clock, **FIXED_3_PER_MIN)
    assert (await limiter.check("a")).remaining == 2
    assert limiter.check_nowait("a") == Decision(True, 1, 20.0)
    assert (await limiter.check("a")).remaining == 0
    assert not (await limiter.check("a")).allowed


def test_limiters_sharing_a_store_count_apart_unless_they_share_a_name() -> None:
    store = MemoryStore(clock=FakeClock())
    one_per_minute = config(algorithm="fixed_window", requests_per_window=1, window_seconds=60)
    route_a = RateLimiter(one_per_minute, store, name="/a")
    route_b = RateLimiter(one_per_minute, store, name="/b")
    route_a_again = RateLimiter(one_per_minute, store, name="/a")
    assert route_a.check_nowait("ip:1") == Decision(True, 0, 20.0)
    assert route_b.check_nowait("ip:1") == Decision(True, 0, 20.0)
    assert route_a_again.check_nowait("ip:1") == Decision(False, 0, 20.0, 20.0)
    assert route_a.check_nowait("ip:2") == Decision(True, 0, 20.0)


# --- keys --------------------------------------------------------------------------

HEADERS = HTTPHeaders({"X-Api-Key": "k-123"})


@pytest.mark.parametrize(
    ("key", "user", "expected"),
    [
        ("ip", "alice", "ip:10.1.2.3"),
        ("user", "alice", "user:alice"),
        ("user", None, "ip:10.1.2.3"),
        ("route", "alice", "route:/users/{id}"),
        ("ip_route", None, "ip:10.1.2.3|route:/users/{id}"),
        ("user_route", "alice", "user:alice|route:/users/{id}"),
        ("user_route", None, "ip:10.1.2.3|route:/users/{id}"),
        ("header:x-api-key", None, "header:k-123"),
        ("header:X-Missing", None, "ip:10.1.2.3"),
    ],
)
def test_limit_key(key: str, user: str | None, expected: str) -> None:
    built = limit_key(
        key, client_ip="10.1.2.3", user=user, route_template="/users/{id}", headers=HEADERS
    )
    assert built == expected


def test_limit_key_bounds_client_chosen_values() -> None:
    long_value = "v" * 10_000
    key = limit_key("header:X-K", client_ip="::1", headers={"X-K": long_value})
    assert key.startswith("header:#")
    assert len(key) < 64
    other = limit_key("header:X-K", client_ip="::1", headers={"X-K": long_value + "w"})
    assert other != key
    assert limit_key("user", client_ip="::1", user="u" * 500).startswith("user:#")
    assert limit_key("header:X-K", client_ip="::1") == "ip:::1"


def test_limit_key_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown rate-limit key"):
        limit_key("cookie", client_ip="1.2.3.4")


# --- bounded memory and expiry -----------------------------------------------------


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_100k_distinct_clients_keep_memory_flat() -> None:
    clock = FakeClock()
    store = MemoryStore(max_keys=10_000, clock=clock)
    # 10 an hour: a client's state matters for 6 minutes, longer than the test runs
    limiter = RateLimiter(config(requests_per_window=10, window_seconds=3600), store)
    check = limiter.check_nowait

    def wave(offset: int) -> None:
        for i in range(100_000):
            clock.now += 0.0001  # 100,000 clients in 10 s: nobody's state has expired
            check(f"ip:10.{offset}.{i // 256}.{i % 256}")
        gc.collect()

    wave(0)
    assert len(store) == 10_000
    assert store.evictions == 90_000
    after_first = rss_bytes()
    wave(1)
    wave(2)
    assert len(store) == 10_000
    assert store.evictions == 290_000
    # Another 200,000 clients cost (next to) nothing: the cap holds memory flat.
    assert rss_bytes() - after_first < 16 * 1024 * 1024


def test_lru_eviction_keeps_the_recently_seen() -> None:
    clock = FakeClock()
    store = MemoryStore(max_keys=2, clock=clock)
    limiter = RateLimiter(config(requests_per_second=1, burst_size=1), store, name="api")
    assert limiter.check_nowait("a") == Decision(True, 0, 1.0)
    limiter.check_nowait("b")
    limiter.check_nowait("a")  # a is now the most recent; b goes next
    limiter.check_nowait("c")
    assert len(store) == 2
    denied = limiter.check_nowait("a")
    assert denied is not None
    assert not denied.allowed  # a's state survived
    assert limiter.check_nowait("b") == Decision(True, 0, 1.0)  # b's did not


def test_keys_expire_once_they_no_longer_matter() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    limiter = RateLimiter(config(requests_per_second=10), store, name="api")
    for i in range(100):
        limiter.check_nowait(f"client-{i}")
    assert len(store) == 100
    clock.now += 0.05  # the buckets are not full yet
    assert store.sweep() == 0
    clock.now += 0.1  # full again: the states are equivalent to none
    limiter.check_nowait("newcomer")
    assert len(store) == 99  # each check drops up to two expired entries
    assert store.sweep() == 98
    assert len(store) == 1


async def test_store_close_forgets_everything() -> None:
    store = MemoryStore()
    RateLimiter(config(requests_per_second=1), store).check_nowait("a")
    await store.aclose()
    assert len(store) == 0


def test_memory_store_refuses_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)


# --- the registry ------------------------------------------------------------------


async def test_registry_builds_one_limiter_per_config_and_one_pool_per_redis() -> None:
    limiters = RateLimiters()
    global_limit = config(requests_per_second=10)
    assert limiters.get(global_limit) is limiters.get(config(requests_per_second=10))
    assert limiters.get(global_limit, name="/a") is not limiters.get(global_limit)
    assert limiters.get(global_limit).store is limiters.memory
    redis_a = config(requests_per_second=10, backend="redis", redis_url="redis://:pw@h:1/0")
    redis_b = config(requests_per_window=5, window_seconds=60, backend="redis",
                     redis_url="redis://:pw@h:1/0")  # fmt: skip
    store = limiters.get(redis_a).store
    assert isinstance(store, RedisStore)
    assert limiters.get(redis_b).store is store
    assert store.url == "redis://:***@h:1/0"  # never log a password
    assert limiters.store_errors == 0
    await limiters.aclose()
