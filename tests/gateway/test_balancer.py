"""Load-balancing strategies over real `BackendState`s, with seeded RNGs and a fake clock."""

import random
from collections import Counter
from collections.abc import Sequence

import pytest
from kairos_core import Backend, CircuitBreakerConfig
from kairos_gateway.backends import BackendRegistry, BackendState
from kairos_gateway.balancer import (
    Balancer,
    IpHash,
    LatencyAware,
    LeastConnections,
    Random,
    RoundRobin,
    Weighted,
    build_balancer,
)
from kairos_gateway.metrics import GatewayMetrics

STRATEGIES = ("round_robin", "least_connections", "random", "weighted", "ip_hash", "latency_aware")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_states(n: int, clock: Clock | None = None) -> list[BackendState]:
    registry = BackendRegistry(GatewayMetrics(), clock=clock or Clock())
    return [
        registry.state(Backend(host=f"http://b{i}", port=80), CircuitBreakerConfig())
        for i in range(n)
    ]


def make(strategy: str, n: int, *, seed: int = 1, clock: Clock | None = None) -> Balancer:
    return build_balancer(strategy, [1] * n, random.Random(seed), clock=clock or Clock())


def picks(balancer: Balancer, backends: Sequence[BackendState], count: int) -> list[int | None]:
    return [balancer.pick(backends, client_key=f"10.0.0.{i}") for i in range(count)]


def open_breaker(state: BackendState) -> None:
    for _ in range(state.breaker.config.failure_threshold):
        permit = state.breaker.acquire()
        assert permit is not None
        permit.failure()


# -- rules every strategy follows -------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("up", "exclude", "allowed"),
    [
        # which backends are available, indexes already tried, acceptable answers
        ("111", (), {0, 1, 2}),
        ("111", (0,), {1, 2}),
        ("111", (0, 2), {1}),
        ("101", (0,), {2}),
        ("100", (0,), {0}),  # only a tried one left: better the same backend than none
        ("111", (0, 1, 2), {0, 1, 2}),
        ("010", (), {1}),
        ("000", (), {None}),
        ("000", (0, 1), {None}),
        ("1", (), {0}),
        ("1", (0,), {0}),
        ("0", (), {None}),
    ],
)
def test_availability_and_exclusion(
    strategy: str, up: str, exclude: tuple[int, ...], allowed: set[int | None]
) -> None:
    backends = make_states(len(up))
    for flag, state in zip(up, backends, strict=True):
        state.healthy = flag == "1"
    balancer = make(strategy, len(up))
    for i in range(30):
        assert balancer.pick(backends, client_key=f"c{i}", exclude=exclude) in allowed


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_open_breaker_is_skipped(strategy: str) -> None:
    backends = make_states(3)
    open_breaker(backends[1])
    assert 1 not in picks(make(strategy, 3), backends, 60)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_backend_gets_traffic(strategy: str) -> None:
    backends = make_states(3)
    assert set(picks(make(strategy, 3), backends, 300)) == {0, 1, 2}


def test_build_balancer() -> None:
    expected = {
        "round_robin": RoundRobin,
        "least_connections": LeastConnections,
        "random": Random,
        "weighted": Weighted,
        "ip_hash": IpHash,
        "latency_aware": LatencyAware,
    }
    for name, cls in expected.items():
        balancer = build_balancer(name, [1, 2])
        assert type(balancer) is cls
        assert balancer.uses_client_key is (name == "ip_hash")
    with pytest.raises(ValueError, match="unknown load balancing strategy 'fastest'"):
        build_balancer("fastest", [1])
    with pytest.raises(ValueError, match="weights"):
        build_balancer("weighted", [1, 0])


# -- round robin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("up", "expected"),
    [
        ("111", [0, 1, 2, 0, 1, 2]),
        ("101", [0, 2, 0, 2, 0, 2]),  # the skipped turn is not given to 2 twice
        ("011", [1, 2, 1, 2, 1, 2]),
    ],
)
def test_round_robin_sequence(up: str, expected: list[int]) -> None:
    backends = make_states(len(up))
    for flag, state in zip(up, backends, strict=True):
        state.healthy = flag == "1"
    assert picks(RoundRobin(), backends, len(expected)) == expected


def test_round_robin_retry_goes_to_the_next_backend_without_moving_the_rotation() -> None:
    backends = make_states(3)
    balancer = RoundRobin()
    assert balancer.pick(backends, client_key="") == 0
    # The request sent to 0 is retried: it goes on to 1, and the rotation is untouched,
    # so the next request still gets 1 rather than skipping to 2.
    assert balancer.pick(backends, client_key="", exclude=(0,)) == 1
    assert balancer.pick(backends, client_key="") == 1
    assert balancer.pick(backends, client_key="", exclude=(1,)) == 2
    assert balancer.pick(backends, client_key="") == 2


# -- least connections ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("inflight", "expected"),
    [
        ([0, 0, 0], [0, 1, 2, 0, 1, 2]),  # ties rotate instead of favouring the first
        ([5, 0, 0], [1, 2, 1, 2, 1, 2]),  # the busy (slow) backend gets nothing new
        ([0, 3, 1], [0, 0, 0, 0, 0, 0]),
        ([2, 1, 1], [1, 2, 1, 2, 1, 2]),
    ],
)
def test_least_connections_static(inflight: list[int], expected: list[int]) -> None:
    backends = make_states(3)
    for state, count in zip(backends, inflight, strict=True):
        state.inflight = count
    assert picks(LeastConnections(), backends, 6) == expected


def test_least_connections_with_requests_piling_up_on_a_slow_backend() -> None:
    backends = make_states(3)
    balancer = LeastConnections()
    # Backend 0 never answers; 1 and 2 answer before the next request arrives.
    for _ in range(30):
        chosen = balancer.pick(backends, client_key="")
        assert chosen is not None
        backends[chosen].inflight += 1
        if chosen != 0:
            backends[chosen].inflight -= 1
    assert backends[0].inflight == 1


# -- random ---------------------------------------------------------------------------


def test_random_is_uniform_and_reproducible() -> None:
    backends = make_states(3)
    counts = Counter(picks(make("random", 3, seed=42), backends, 30_000))
    assert all(9_400 < counts[i] < 10_600 for i in range(3)), counts
    assert picks(make("random", 3, seed=7), backends, 50) == picks(
        make("random", 3, seed=7), backends, 50
    )


def test_random_over_available_only() -> None:
    backends = make_states(4)
    backends[2].healthy = False
    counts = Counter(picks(make("random", 4, seed=3), backends, 9_000))
    assert counts[2] == 0
    assert all(2_700 < counts[i] < 3_300 for i in (0, 1, 3)), counts


# -- weighted -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "up", "cycle"),
    [
        # nginx's smooth weighted round robin: interleaved, never A A A B B C.
        ([3, 2, 1], "111", "ABACBA"),
        ([5, 1, 1], "111", "AABACAA"),  # nginx's documented example
        ([1, 1, 1], "111", "ABC"),
        ([3, 2, 1], "110", "ABABA"),  # C sits out: the cycle is A:B = 3:2
        ([3, 2, 1], "011", "BCB"),
    ],
)
def test_weighted_exact_sequence(weights: list[int], up: str, cycle: str) -> None:
    backends = make_states(len(weights))
    for flag, state in zip(up, backends, strict=True):
        state.healthy = flag == "1"
    balancer = Weighted(weights)
    got = "".join("ABC"[i] for i in picks(balancer, backends, 4 * len(cycle)))  # type: ignore[index]
    assert got == cycle * 4


def test_weighted_shares_over_many_cycles() -> None:
    backends = make_states(3)
    counts = Counter(picks(Weighted([3, 2, 1]), backends, 6 * 100))
    assert counts == {0: 300, 1: 200, 2: 100}


def test_weighted_backend_returning_rejoins_the_cycle() -> None:
    backends = make_states(3)
    balancer = Weighted([3, 2, 1])
    backends[0].healthy = False
    assert set(picks(balancer, backends, 9)) == {1, 2}
    backends[0].healthy = True
    counts = Counter(picks(balancer, backends, 600))
    assert abs(counts[0] - 300) <= 3, counts
    assert abs(counts[1] - 200) <= 3, counts


# -- ip hash --------------------------------------------------------------------------

KEYS = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(10_000)]


def assignment(backends: Sequence[BackendState]) -> list[int | None]:
    balancer = IpHash()
    return [balancer.pick(backends, client_key=key) for key in KEYS]


def test_ip_hash_is_sticky_and_even() -> None:
    backends = make_states(4)
    first = assignment(backends)
    assert assignment(backends) == first  # same client, same backend, any balancer object
    counts = Counter(first)
    assert all(2_250 < counts[i] < 2_750 for i in range(4)), counts


@pytest.mark.parametrize("removed", [0, 2, 4])
def test_ip_hash_removing_a_backend_moves_only_its_clients(removed: int) -> None:
    backends = make_states(5)
    before = assignment(backends)
    backends[removed].healthy = False
    after = assignment(backends)
    for old, new in zip(before, after, strict=True):
        if old == removed:
            assert new != removed
        else:
            assert new == old
    moved = Counter(new for old, new in zip(before, after, strict=True) if old == removed)
    assert len(moved) == 4  # its clients spread over all the others, not onto one
    backends[removed].healthy = True
    assert assignment(backends) == before  # and they come back


def test_ip_hash_depends_on_address_not_position() -> None:
    backends = make_states(3)
    before = assignment(backends)
    # The same backends listed in another order: every client keeps its server.
    reordered = [backends[2], backends[0], backends[1]]
    position = {0: 2, 1: 0, 2: 1}
    assert [position[i] for i in assignment(reordered)] == before  # type: ignore[index]


def test_ip_hash_retry_goes_elsewhere() -> None:
    backends = make_states(3)
    balancer = IpHash()
    home = balancer.pick(backends, client_key="192.0.2.7")
    assert home is not None
    assert balancer.pick(backends, client_key="192.0.2.7", exclude=(home,)) != home


# -- latency aware --------------------------------------------------------------------


def simulate(
    balancer: Balancer,
    backends: Sequence[BackendState],
    clock: Clock,
    latencies: list[float],
    requests: int,
    step: float = 0.01,
) -> Counter[int]:
    """Sequential requests ``step`` apart, each observing its backend's latency."""
    counts: Counter[int] = Counter()
    for _ in range(requests):
        chosen = balancer.pick(backends, client_key="")
        assert chosen is not None
        counts[chosen] += 1
        clock.now += step
        backends[chosen].observe_latency(latencies[chosen], clock.now)
    return counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_latency_aware_prefers_fast_backends_and_recovers(seed: int) -> None:
    clock = Clock()
    backends = make_states(3, clock)
    balancer = make("latency_aware", 3, seed=seed, clock=clock)
    latencies = [0.005, 0.005, 0.055]  # backend 2 is 50 ms slower
    counts = simulate(balancer, backends, clock, latencies, 2_000)
    assert counts[0] + counts[1] >= 0.8 * 2_000, counts
    assert counts[2] < 0.05 * 2_000, counts
    # Backend 2 recovers: its estimate decays while unmeasured, it is tried again,
    # measured fast, and gets its share back (within 20 s of simulated time).
    latencies[2] = 0.005
    simulate(balancer, backends, clock, latencies, 2_000)
    counts = simulate(balancer, backends, clock, latencies, 3_000)
    assert counts[2] > 0.25 * 3_000, counts


def test_latency_aware_counts_requests_in_flight() -> None:
    clock = Clock()
    backends = make_states(2, clock)
    for state in backends:
        state.observe_latency(0.01, clock.now)
    backends[0].inflight = 4  # same latency, but busy
    balancer = make("latency_aware", 2, clock=clock)
    assert picks(balancer, backends, 20) == [1] * 20


def test_latency_aware_tries_new_backends() -> None:
    # A backend never measured starts at a moderate default (30 ms), so it is
    # preferred over one measured slow and loses to one measured fast.
    clock = Clock()
    backends = make_states(2, clock)
    backends[0].observe_latency(0.2, clock.now)
    assert picks(make("latency_aware", 2, clock=clock), backends, 10) == [1] * 10
    backends[0].observe_latency(0.001, clock.now + 60)
    clock.now += 60
    backends[1].observe_latency(0.03, clock.now)
    assert picks(make("latency_aware", 2, clock=clock), backends, 10) == [0] * 10
