"""Backend selection: one balancer object per route, built with the snapshot.

`Balancer.pick` returns an index into the route's backends (config order), choosing
only backends that are `available` (healthy, breaker admitting). ``exclude`` holds the
indexes a request already tried, so a retry goes elsewhere; when only excluded
backends are available, one of them is returned anyway (a retry to the same backend
beats none). None means nothing is available.

The strategies keep their state in the balancer (a counter, weights) and read the
backends' shared state (in-flight counts, latency); a new snapshot builds new
balancers, which restarts rotation but keeps everything learnt about the backends.
Each pick scans the route's backends in place, without building lists.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar, Protocol

from .backends import BackendState

__all__ = [
    "Balancer",
    "IpHash",
    "LatencyAware",
    "LeastConnections",
    "Random",
    "RoundRobin",
    "Weighted",
    "build_balancer",
]

_MASK64 = (1 << 64) - 1


class Balancer(Protocol):
    #: True when `pick` uses ``client_key``; other strategies ignore it, so the caller
    #: may skip working out the client address (X-Forwarded-For parsing).
    uses_client_key: ClassVar[bool]

    def pick(
        self,
        backends: Sequence[BackendState],
        *,
        client_key: str = "",
        exclude: Collection[int] = (),
    ) -> int | None: ...


class _Strategy:
    """The exclude-then-fallback rule shared by every strategy; subclasses `_choose`."""

    __slots__ = ()
    uses_client_key: ClassVar[bool] = False

    def pick(
        self,
        backends: Sequence[BackendState],
        *,
        client_key: str = "",
        exclude: Collection[int] = (),
    ) -> int | None:
        if len(backends) == 1:
            return 0 if backends[0].available() else None
        chosen = self._choose(backends, client_key, exclude)
        if chosen is None and exclude:
            chosen = self._choose(backends, client_key, ())
        return chosen

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        raise NotImplementedError


def _nth_eligible(backends: Sequence[BackendState], exclude: Collection[int], nth: int) -> int:
    """Index of the ``nth`` (0-based) available, non-excluded backend (it must exist)."""
    for i, backend in enumerate(backends):
        if i not in exclude and backend.available():
            if nth == 0:
                return i
            nth -= 1
    raise AssertionError("fewer eligible backends than counted")


def _count_eligible(backends: Sequence[BackendState], exclude: Collection[int]) -> int:
    count = 0
    for i, backend in enumerate(backends):
        if i not in exclude and backend.available():
            count += 1
    return count


class RoundRobin(_Strategy):
    """Each available backend in turn; an unavailable one is skipped, not double-served."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        n = len(backends)
        start = self._next
        for offset in range(n):
            i = (start + offset) % n
            if i not in exclude and backends[i].available():
                # Continue after the one chosen, so skipping a backend does not give
                # its turn to the next one as well as that one's own turn. A retry
                # (exclude set) leaves the rotation alone: otherwise every retry would
                # push the next request back onto the backend that just failed.
                if not exclude:
                    self._next = i + 1
                return i
        return None


class LeastConnections(_Strategy):
    """Fewest requests in flight. Ties go round robin: the scan starts after the last
    backend chosen, so idle backends take turns instead of the first one taking all."""

    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        n = len(backends)
        start = self._next
        best: int | None = None
        best_load = 0
        for offset in range(n):
            i = (start + offset) % n
            backend = backends[i]
            if i in exclude or not backend.available():
                continue
            if best is None or backend.inflight < best_load:
                best, best_load = i, backend.inflight
        if best is not None:
            self._next = best + 1
        return best


class Random(_Strategy):
    """Uniform over the available backends."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        count = _count_eligible(backends, exclude)
        if count == 0:
            return None
        return _nth_eligible(backends, exclude, self._rng.randrange(count))


class Weighted(_Strategy):
    """Smooth weighted round robin, as nginx: interleaved, exact shares per cycle.

    Each pick adds every available backend's weight to its running score, takes the
    highest (the first on a tie) and subtracts the total weight from the winner.
    Weights 3/2/1 give A B A C B A, repeating. Unavailable backends sit out: their
    scores stay put and the shares are split among the others.
    """

    __slots__ = ("_current", "_weights")

    def __init__(self, weights: Sequence[int]) -> None:
        if not weights or any(w < 1 for w in weights):
            raise ValueError("weights must be positive integers, one per backend")
        self._weights = tuple(weights)
        self._current = [0] * len(weights)

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        weights, current = self._weights, self._current
        total = 0
        best = -1
        for i, backend in enumerate(backends):
            if i in exclude or not backend.available():
                continue
            weight = weights[i]
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return best


class IpHash(_Strategy):
    """Rendezvous hashing of the client key: each client sticks to one backend.

    Every (client, backend) pair gets a score and the client goes to the highest
    scoring available backend, so when a backend leaves, only its own clients move
    (to their second choice) and everyone else stays put. The client key is hashed
    once (crc32) and mixed with each backend's `BackendState.hash_seed` by a 64-bit
    finaliser, which keeps the scores independent across backends.
    """

    __slots__ = ()
    uses_client_key = True

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        key = (zlib.crc32(client_key.encode()) * 0x9E3779B97F4A7C15) & _MASK64
        best: int | None = None
        best_score = -1
        for i, backend in enumerate(backends):
            if i in exclude or not backend.available():
                continue
            score = _mix64(key ^ backend.hash_seed)
            if score > best_score:
                best, best_score = i, score
        return best


def _mix64(value: int) -> int:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


class LatencyAware(_Strategy):
    """Power of two random choices by peak-EWMA cost (Finagle, Linkerd, Kong `latency`).

    Two distinct available backends are drawn at random and the one with the lower
    `BackendState.cost` (latency estimate x (in-flight + 1)) wins. Sampling two rather
    than scanning all for the minimum keeps a herd from piling onto one backend whose
    estimate is momentarily the lowest.
    """

    __slots__ = ("_clock", "_rng")

    def __init__(self, rng: random.Random, clock: Callable[[], float]) -> None:
        self._rng = rng
        self._clock = clock

    def _choose(
        self, backends: Sequence[BackendState], client_key: str, exclude: Collection[int]
    ) -> int | None:
        if not exclude:
            # Common case first: draw two distinct indexes straight away; only when one
            # of them is unavailable fall back to drawing among the eligible ones.
            n = len(backends)
            rand = self._rng.random
            i = int(rand() * n)
            j = int(rand() * (n - 1))
            if j >= i:
                j += 1
            one, other = backends[i], backends[j]
            if one.available() and other.available():
                now = self._clock()
                return j if other.cost(now) < one.cost(now) else i
        count = _count_eligible(backends, exclude)
        if count <= 1:
            return None if count == 0 else _nth_eligible(backends, exclude, 0)
        rng = self._rng
        first = rng.randrange(count)
        second = rng.randrange(count - 1)
        if second >= first:
            second += 1  # distinct from the first
        a = _nth_eligible(backends, exclude, first)
        b = _nth_eligible(backends, exclude, second)
        now = self._clock()
        return b if backends[b].cost(now) < backends[a].cost(now) else a


def build_balancer(
    strategy: str,
    weights: Sequence[int],
    rng: random.Random | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Balancer:
    """The balancer for a route's ``load_balancing_strategy``.

    ``weights`` are the route's backend weights in config order (only `weighted` uses
    them); ``rng`` defaults to a fresh unseeded `random.Random`; ``clock`` (monotonic
    seconds, the same clock as the `BackendRegistry`) is read by `latency_aware`.
    """
    if rng is None:
        rng = random.Random()
    if strategy == "round_robin":
        return RoundRobin()
    if strategy == "least_connections":
        return LeastConnections()
    if strategy == "random":
        return Random(rng)
    if strategy == "weighted":
        return Weighted(weights)
    if strategy == "ip_hash":
        return IpHash()
    if strategy == "latency_aware":
        return LatencyAware(rng, clock)
    raise ValueError(f"unknown load balancing strategy {strategy!r}")
