"""Edge-security micro-benchmarks: JWT verification and rate-limit checks, in-process.

* JWT: `kairos_gateway.auth.JwtVerifier(JwtConfig(...)).authenticate("Bearer ...")`
  (synchronous for a static key): one token repeated (the verified-token cache), and
  fresh tokens (never seen by the verifier: a cache miss, a full pyjwt decode and
  signature check, then the cache insert) for HS256, RS256 (2048-bit) and ES256 (P-256).
* Rate limit: `kairos_gateway.ratelimit.RateLimiter` over a `MemoryStore`
  (`check_nowait`; one key per algorithm, and token bucket over 100,000 distinct keys)
  and over a `RedisStore` (`await check(key)`; one at a time, and from 50 and 100
  concurrent tasks), and over a `BatchedStore` (``sync: "batched"``: `check_nowait`
  first, `await check(key)` only when it says None, as the rate-limit policy does; one
  task, and 50). The limits are high enough never to refuse; a refusal or a store
  fallback (Redis too slow or failing: the check is answered without Redis) is counted
  and reported, since it makes that figure meaningless as a Redis rate.

Figures are operations per second, the best of several timed repeats.

    uv run python bench/edge_micro.py [--quick] [--no-redis] [--json FILE]

Run alone, it starts its own redis-server (if installed) on a free port and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kairos_core import RateLimitConfig
from kairos_core.auth import JwtConfig
from kairos_gateway.auth import JwtVerifier
from kairos_gateway.ratelimit import BatchedStore, MemoryStore, RateLimiter, RedisStore

#: kairos-rs's claim for repeated-token validation (issue 4's target).
MIN_CACHED_JWT_PER_S = 50_000.0
#: A fixed HS256 secret (>= 32 bytes, not a placeholder): the gateway benchmark uses it too.
HS256_SECRET = "kairos-bench-hs256-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TOKEN_TTL_S = 24 * 3600
#: A rate high enough never to refuse (token bucket, 1e6/s, burst 1e6).
NEVER_REFUSE_RPS = 1_000_000.0
NEVER_REFUSE_BURST = 1_000_000
MEMORY_KEYS = 100_000
REDIS_PREFIX = "kairos-bench-micro:"
#: `RedisStore` defaults: `redis_timeout_ms` 100, and after a failure Redis is skipped
#: (fallback answers) for 0.5 s.
REDIS_DEFAULT_TIMEOUT_MS = 100
REDIS_SKIP_S = 0.5


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str  # stable id, e.g. "jwt_cached_hs256"
    label: str  # what the table shows
    ops_per_s: float  # best repeat
    ops: int  # operations in the best repeat
    repeats: int
    concurrency: int = 1
    failures: int = 0  # refusals, store fallbacks or failed verifications, all repeats
    ops_total: int = 0  # operations over all repeats (what `failures` counts among)

    @property
    def us_per_op(self) -> float:
        """Wall time per operation (for concurrent runs: per completed check, not latency)."""
        return 1e6 / self.ops_per_s if self.ops_per_s > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "us_per_op": self.us_per_op}


@dataclass(frozen=True, slots=True)
class Plan:
    repeats: int
    cached_calls: int  # authenticate() calls per repeat, repeated token
    fresh_tokens: dict[str, int]  # distinct tokens per repeat, by algorithm
    memory_calls: int  # check_nowait() calls per repeat
    redis_calls: int  # checks per repeat (sequential and concurrent)


FULL = Plan(
    repeats=5,
    cached_calls=200_000,
    fresh_tokens={"HS256": 4_000, "RS256": 1_000, "ES256": 1_000},
    memory_calls=200_000,
    redis_calls=5_000,
)
QUICK = Plan(
    repeats=3,
    cached_calls=50_000,
    fresh_tokens={"HS256": 1_000, "RS256": 300, "ES256": 300},
    memory_calls=50_000,
    redis_calls=2_000,
)


# -- tokens ------------------------------------------------------------------------------


def hs256_token(sub: str = "bench-user", jti: str = "0", ttl_s: int = TOKEN_TTL_S) -> str:
    """A valid HS256 token under `HS256_SECRET` (the gateway benchmark's bearer token)."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl_s, "jti": jti}
    return jwt.encode(claims, HS256_SECRET, algorithm="HS256")


def _keypair(alg: str) -> tuple[Any, str]:
    """A private key object and the matching public key in PEM."""
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(alg)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, pem.decode()


def _config(alg: str, public_pem: str | None = None) -> JwtConfig:
    if alg == "HS256":
        return JwtConfig.model_validate({"secret": HS256_SECRET, "algorithms": ["HS256"]})
    return JwtConfig.model_validate({"public_key": public_pem, "algorithms": [alg]})


def _tokens(alg: str, key: Any, count: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {"sub": f"user-{i}", "iat": now, "exp": now + TOKEN_TTL_S, "jti": str(i)},
            key,
            algorithm=alg,
        )
        for i in range(count)
    ]


# -- timing ------------------------------------------------------------------------------


def _best(
    name: str,
    label: str,
    repeats: int,
    prepare: Callable[[], Callable[[], tuple[int, int]]],
    concurrency: int = 1,
) -> MicroResult:
    """`prepare()` builds one repeat (untimed) and returns the timed body, which gives
    (operations done, failures). The best repeat's rate is kept."""
    best_rate, best_ops, failures, total = 0.0, 0, 0, 0
    for _ in range(repeats):
        body = prepare()
        started = time.perf_counter()
        ops, failed = body()
        elapsed = time.perf_counter() - started
        failures += failed
        total += ops
        rate = ops / elapsed if elapsed > 0 else 0.0
        if rate > best_rate:
            best_rate, best_ops = rate, ops
    return MicroResult(name, label, best_rate, best_ops, repeats, concurrency, failures, total)


def _jwt_cached(plan: Plan) -> MicroResult:
    verifier = JwtVerifier(_config("HS256"))
    header = f"Bearer {hs256_token()}"
    claims = verifier.authenticate(header)  # verified once, cached from here on
    cache = verifier.token_cache
    if not isinstance(claims, MappingProxyType) or claims.get("sub") != "bench-user":
        raise AssertionError("the HS256 verifier should return the token's claims at once")
    if cache is None:
        raise AssertionError("the verifier should have a token cache (cache_size > 0)")
    if len(cache) != 1:
        raise AssertionError("the repeated token should be in the verifier's cache")
    authenticate = verifier.authenticate
    calls = plan.cached_calls

    def prepare() -> Callable[[], tuple[int, int]]:
        def body() -> tuple[int, int]:
            for _ in range(calls):
                authenticate(header)
            return calls, 0

        return body

    result = _best(
        "jwt_cached_hs256",
        "JWT verify, repeated token (cache hit), HS256",
        plan.repeats,
        prepare,
    )
    if len(cache) != 1:
        raise AssertionError("the cached-token run verified more than one token")
    return result


def _jwt_fresh(alg: str, plan: Plan) -> MicroResult:
    count = plan.fresh_tokens[alg]
    if alg == "HS256":
        config, key = _config(alg), HS256_SECRET.encode()
    else:
        private, pem = _keypair(alg)
        config, key = _config(alg, pem), private
    tokens = [f"Bearer {t}" for t in _tokens(alg, key, count)]

    def prepare() -> Callable[[], tuple[int, int]]:
        verifier = JwtVerifier(config)  # empty cache: every token is a miss
        authenticate = verifier.authenticate

        def body() -> tuple[int, int]:
            for header in tokens:
                authenticate(header)
            cache = verifier.token_cache
            verified = len(cache) if cache is not None else count
            return count, count - verified

        return body

    bits = " (2048-bit)" if alg == "RS256" else " (P-256)" if alg == "ES256" else ""
    return _best(
        f"jwt_fresh_{alg.lower()}",
        f"JWT verify, fresh tokens, {alg}{bits}",
        plan.repeats,
        prepare,
    )


def _limit(algorithm: str, **extra: object) -> RateLimitConfig:
    if algorithm == "token_bucket":
        fields: dict[str, object] = {
            "requests_per_second": NEVER_REFUSE_RPS,
            "burst_size": NEVER_REFUSE_BURST,
        }
    else:  # 1e6 per 1 s window: the benchmark stays far below it
        fields = {"requests_per_window": int(NEVER_REFUSE_RPS), "window_seconds": 1.0}
    return RateLimitConfig.model_validate({"algorithm": algorithm, **fields, **extra})


def _memory(algorithm: str, plan: Plan, keys: int = 1) -> MicroResult:
    calls = plan.memory_calls
    key_list = [f"ip:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(keys)]
    limiter = RateLimiter(_limit(algorithm), MemoryStore(max_keys=MEMORY_KEYS))
    for key in key_list:  # steady state: every key already has a state
        limiter.check_nowait(key)

    def prepare() -> Callable[[], tuple[int, int]]:
        check = limiter.check_nowait

        def body() -> tuple[int, int]:
            refused = 0
            n = len(key_list)
            for i in range(calls):
                decision = check(key_list[i % n])
                if decision is None or not decision.allowed:
                    refused += 1
            return calls, refused

        return body

    where = "1 key" if keys == 1 else f"{keys:,} keys"
    return _best(
        f"ratelimit_memory_{algorithm}" + ("" if keys == 1 else f"_{keys}_keys"),
        f"rate-limit check, memory, {algorithm}, {where}",
        plan.repeats,
        prepare,
    )


@dataclass(frozen=True, slots=True)
class RedisCase:
    name: str
    label: str
    concurrency: int
    timeout_ms: int  # the store's `redis_timeout_ms`; the gateway's default is 100


REDIS_CASES: tuple[RedisCase, ...] = (
    RedisCase("ratelimit_redis_sequential", "sequential", 1, REDIS_DEFAULT_TIMEOUT_MS),
    RedisCase("ratelimit_redis_50_tasks", "50 tasks", 50, REDIS_DEFAULT_TIMEOUT_MS),
    RedisCase("ratelimit_redis_100_tasks", "100 tasks", 100, REDIS_DEFAULT_TIMEOUT_MS),
    RedisCase("ratelimit_redis_100_tasks_1s", "100 tasks, timeout 1 s", 100, 1000),
)


async def _redis_case(url: str, case: RedisCase, plan: Plan) -> MicroResult:
    """One fresh `RedisStore` (its own pool of 64 connections) per case; a warm-up round
    at the case's concurrency first, so connections and the script are in place."""
    store = RedisStore(url, key_prefix=REDIS_PREFIX, timeout_ms=case.timeout_ms)
    limiter = RateLimiter(_limit("token_bucket"), store)
    key = "ip:127.0.0.1"

    async def worker(n: int) -> int:
        failed = 0
        for _ in range(n):
            decision = await limiter.check(key)
            if not decision.allowed or decision.store_error:
                failed += 1
        return failed

    async def round_(total: int) -> tuple[int, int]:
        per_task = max(1, total // case.concurrency)
        failed = await asyncio.gather(*(worker(per_task) for _ in range(case.concurrency)))
        return per_task * case.concurrency, sum(failed)

    try:
        await round_(max(200, case.concurrency * 4))
        await asyncio.sleep(REDIS_SKIP_S)  # a warm-up fallback must not skip the first repeat
        best_rate, best_ops, failures, total = 0.0, 0, 0, 0
        for _ in range(plan.repeats):
            errors_before = store.errors
            started = time.perf_counter()
            ops, failed = await round_(plan.redis_calls)
            elapsed = time.perf_counter() - started
            failures += failed
            total += ops
            if store.errors > errors_before:
                await asyncio.sleep(REDIS_SKIP_S)  # let the store retry Redis again
            if elapsed > 0 and ops / elapsed > best_rate:
                best_rate, best_ops = ops / elapsed, ops
    finally:
        await store.aclose()
    label = f"rate-limit check, Redis, token_bucket, {case.label}"
    return MicroResult(
        case.name, label, best_rate, best_ops, plan.repeats, case.concurrency, failures, total
    )


BATCHED_CASES: tuple[RedisCase, ...] = (
    RedisCase("ratelimit_redis_batched_sequential", "sequential", 1, REDIS_DEFAULT_TIMEOUT_MS),
    RedisCase("ratelimit_redis_batched_50_tasks", "50 tasks", 50, REDIS_DEFAULT_TIMEOUT_MS),
)


async def _batched_case(url: str, case: RedisCase, plan: Plan) -> MicroResult:
    """A `BatchedStore` (the defaults: leases up to 100, 1 s) over a fresh `RedisStore`.
    Each check is `check_nowait`, then `await check` only when that gave None, and the
    task then yields once (`asyncio.sleep(0)`), as a gateway's request does for its I/O:
    that is when a lease refill in the background gets its turn."""
    store = RedisStore(url, key_prefix=REDIS_PREFIX, timeout_ms=case.timeout_ms)
    batched = BatchedStore(store)
    config = _limit("token_bucket", backend="redis", redis_url=url, sync="batched")
    limiter = RateLimiter(config, batched)
    key = "ip:127.0.0.2"

    async def worker(n: int) -> int:
        failed = 0
        for _ in range(n):
            decision = limiter.check_nowait(key)
            if decision is None:
                decision = await limiter.check(key)
            if not decision.allowed or decision.store_error:
                failed += 1
            await asyncio.sleep(0)
        return failed

    async def round_(total: int) -> tuple[int, int]:
        per_task = max(1, total // case.concurrency)
        failed = await asyncio.gather(*(worker(per_task) for _ in range(case.concurrency)))
        return per_task * case.concurrency, sum(failed)

    calls = plan.memory_calls // 4
    try:
        await round_(max(2000, case.concurrency * 40))
        best_rate, best_ops, failures, total = 0.0, 0, 0, 0
        for _ in range(plan.repeats):
            started = time.perf_counter()
            ops, failed = await round_(calls)
            elapsed = time.perf_counter() - started
            failures += failed
            total += ops
            if elapsed > 0 and ops / elapsed > best_rate:
                best_rate, best_ops = ops / elapsed, ops
        leases = batched.leases
    finally:
        await batched.aclose()
        await store.aclose()
    label = (
        f"rate-limit check, Redis batched, token_bucket, {case.label} "
        f"({leases:,} leases for {total:,} checks and the warm-up)"
    )
    return MicroResult(
        case.name, label, best_rate, best_ops, plan.repeats, case.concurrency, failures, total
    )


async def _redis_checks(url: str, plan: Plan) -> list[MicroResult]:
    results = [await _redis_case(url, case, plan) for case in REDIS_CASES]
    results += [await _batched_case(url, case, plan) for case in BATCHED_CASES]
    return results


def _run_async(coro: Awaitable[list[MicroResult]]) -> list[MicroResult]:
    """On uvloop when available, like the gateway."""

    async def main() -> list[MicroResult]:
        return await coro

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def bench(
    quick: bool = False,
    redis_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[MicroResult]:
    """Every micro-benchmark; the Redis ones only with ``redis_url``."""
    plan = QUICK if quick else FULL
    say = progress or (lambda _message: None)
    results: list[MicroResult] = []
    say("JWT: repeated token (cache)")
    results.append(_jwt_cached(plan))
    for alg in ("HS256", "RS256", "ES256"):
        say(f"JWT: fresh {alg} tokens")
        results.append(_jwt_fresh(alg, plan))
    for algorithm in ("token_bucket", "fixed_window", "sliding_window"):
        say(f"rate limit: memory store, {algorithm}")
        results.append(_memory(algorithm, plan))
    say(f"rate limit: memory store, token_bucket over {MEMORY_KEYS:,} keys")
    results.append(_memory("token_bucket", plan, keys=MEMORY_KEYS))
    if redis_url is not None:
        say("rate limit: Redis store, sequential and concurrent")
        results.extend(_run_async(_redis_checks(redis_url, plan)))
    return results


def find(results: list[MicroResult], name: str) -> MicroResult | None:
    return next((r for r in results if r.name == name), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="JWT and rate-limit micro-benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis-backed checks")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)

    from procs import BenchError, log
    from targets import RedisServer, redis_server_path

    server: RedisServer | None = None
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-micro-"))
    try:
        if not args.no_redis:
            if redis_server_path() is None:
                log("redis-server not installed: the Redis rows are skipped")
            else:
                server = RedisServer(workdir)
                log(f"redis-server pid {server.child.pid} on port {server.port}")
        results = bench(quick=args.quick, redis_url=server.url if server else None, progress=log)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    width = max(len(r.label) for r in results)
    for r in results:
        failures = f"  failures {r.failures:,} of {r.ops_total:,}" if r.failures else ""
        print(f"{r.label:<{width}}  {r.ops_per_s:>12,.0f} /s  {r.us_per_op:8.2f} us{failures}")
    cached = find(results, "jwt_cached_hs256")
    if cached is not None:
        verdict = "PASS" if cached.ops_per_s >= MIN_CACHED_JWT_PER_S else "MISS"
        print(f"{verdict}  repeated-token verifications >= {MIN_CACHED_JWT_PER_S:,.0f}/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"results": [r.to_dict() for r in results]}
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
