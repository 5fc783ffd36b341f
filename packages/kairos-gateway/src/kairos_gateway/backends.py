"""Per-backend runtime state that outlives configuration snapshots.

A `BackendState` holds what the gateway learns about one upstream server: requests in
flight, a peak-EWMA latency estimate, its circuit breaker, its health (active checks)
and its outlier-detection state (passive health, `outlier.Outlier`). The
`BackendRegistry` hands the same object to every snapshot that names the backend, so
a config reload keeps it; `BackendRegistry.retain` drops backends that left the config.

Identity is the `Endpoint` (scheme, host, port and TLS settings), not the bare
address: two routes naming the same address with different TLS verification get two
states, so neither route's TLS settings silently apply to the other's traffic. In the
usual case (same settings) the address identifies exactly one state. Metrics
(`BackendStats`) are keyed by address and shared either way.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import NamedTuple, Protocol

from kairos_core import (
    Backend,
    CircuitBreakerConfig,
    HealthCheckConfig,
    OutlierDetectionConfig,
)

from .breaker import CircuitBreaker
from .metrics import BackendStats, GatewayMetrics
from .outlier import Group, Outlier
from .upstream import Endpoint

__all__ = [
    "DEFAULT_RTT_S",
    "EWMA_DECAY_S",
    "BackendListener",
    "BackendRegistry",
    "BackendSettings",
    "BackendState",
    "HealthRecord",
    "endpoint_of",
]

log = logging.getLogger("kairos.gateway")

#: Latency assumed for a backend never measured (Linkerd's default RTT): low enough
#: that a new backend gets tried, high enough that it does not draw all the traffic.
DEFAULT_RTT_S = 0.03
#: Default time constant of the EWMA (Finagle and Linkerd use 10 s).
EWMA_DECAY_S = 10.0
# Floor for the decayed estimate, so in-flight requests always add cost.
_MIN_RTT_S = 1e-6


def _decay(x: float) -> float:
    """``exp(-x)``; below 1e-3 its first-order form, exact to 5e-7 and several times
    cheaper (at gateway request rates the gaps between observations are tiny)."""
    return 1.0 - x if x < 1e-3 else math.exp(-x)


def endpoint_of(backend: Backend) -> Endpoint:
    """The upstream `Endpoint` for a configured backend (also its registry key)."""
    return Endpoint(
        scheme=backend.scheme,
        host=backend.hostname,
        port=backend.port,
        tls_verify=backend.tls_verify,
        tls_ca_file=backend.tls_ca_file,
        tls_cert_file=backend.tls_cert_file,
        tls_key_file=backend.tls_key_file,
    )


class HealthRecord:
    """Active health-check results, for `/api/backends`; written by the health checker."""

    __slots__ = ("consecutive_fail", "consecutive_ok", "last_check", "last_error")

    def __init__(self) -> None:
        self.last_check: float | None = None  # epoch seconds of the last probe's end
        self.last_error: str | None = None  # why the last failed probe failed
        self.consecutive_ok = 0
        self.consecutive_fail = 0


class BackendState:
    """Everything known about one backend. The request path reads and writes it directly.

    ``inflight`` is maintained by the request path: +1 when a request is sent upstream,
    -1 when that try ends, however it ends (response finished, upstream error, client
    abort). ``healthy`` is written by the health checker (see `record_probe`);
    ``outlier`` is fed each try's outcome by the request path.
    """

    __slots__ = (
        "_ewma",
        "_ewma_at",
        "_tau",
        "address",
        "breaker",
        "endpoint",
        "hash_seed",
        "health",
        "healthy",
        "inflight",
        "outlier",
        "stats",
    )

    def __init__(
        self,
        address: str,
        endpoint: Endpoint,
        stats: BackendStats,
        breaker: CircuitBreaker,
        outlier: Outlier,
        *,
        now: float,
        ewma_decay_s: float = EWMA_DECAY_S,
    ) -> None:
        self.address = address
        self.endpoint = endpoint
        self.stats = stats
        self.breaker = breaker
        self.outlier = outlier
        self.inflight = 0
        self.healthy = True
        self.health = HealthRecord()
        self._ewma = DEFAULT_RTT_S
        self._ewma_at = now
        self._tau = ewma_decay_s
        #: Stable 64-bit value from the address; rendezvous hashing mixes it with the
        #: client key (Python's `hash()` is salted per process, so unusable across workers).
        self.hash_seed = int.from_bytes(
            hashlib.blake2b(address.encode(), digest_size=8).digest(), "little"
        )

    def available(self) -> bool:
        """In rotation: healthy, not ejected, and its breaker would admit a request."""
        outlier = self.outlier
        return (
            self.healthy and not (outlier.until and outlier.ejected()) and self.breaker.available()
        )

    def down(self) -> bool:
        """Out of rotation for a while: unhealthy, ejected, or its breaker open. Unlike
        `available`, a half-open breaker whose probe slots are all taken is not down
        (it is being tested right now), so the answer does not flicker under load."""
        return not self.healthy or self.outlier.ejected() or self.breaker.state == "open"

    def observe_latency(self, seconds: float, now: float) -> None:
        """Feed one measured latency (request sent to response headers) at time ``now``.

        Peak-EWMA as Finagle and Linkerd: against the current (decayed) estimate, a
        higher latency replaces it at once, so trouble shows on the next pick; a lower
        one is blended in with weight ``1 - exp(-dt / tau)``, ``dt`` being the time
        since the previous observation.
        """
        current = self.ewma(now)
        if seconds > current:
            self._ewma = seconds
        else:
            weight = _decay(max(0.0, now - self._ewma_at) / self._tau)
            self._ewma = current * weight + seconds * (1.0 - weight)
        self._ewma_at = max(now, self._ewma_at)

    def ewma(self, now: float) -> float:
        """The latency estimate in seconds, decayed toward 0 since the last observation.

        The decay is what lets a backend that was slow get traffic again: the longer it
        goes unmeasured, the cheaper it looks, until a request measures it afresh.
        Reading does not change the state.
        """
        elapsed = now - self._ewma_at
        if elapsed <= 0.0:
            return self._ewma
        return max(_MIN_RTT_S, self._ewma * _decay(elapsed / self._tau))

    def cost(self, now: float) -> float:
        """Load for latency-aware balancing: estimated latency x (in-flight + 1)."""
        return self.ewma(now) * (self.inflight + 1)

    def record_probe(
        self, passed: bool, *, at: float, error: str | None, config: HealthCheckConfig
    ) -> bool:
        """Record one health probe (``at`` in epoch seconds); True if ``healthy`` flipped.

        The caller logs the flip and updates nothing else; thresholds come from ``config``.
        """
        record = self.health
        record.last_check = at
        if passed:
            record.consecutive_ok += 1
            record.consecutive_fail = 0
            record.last_error = None
            if not self.healthy and record.consecutive_ok >= config.healthy_threshold:
                self.healthy = True
                return True
        else:
            record.consecutive_fail += 1
            record.consecutive_ok = 0
            record.last_error = error
            if self.healthy and record.consecutive_fail >= config.unhealthy_threshold:
                self.healthy = False
                return True
        return False

    def __repr__(self) -> str:
        return f"<BackendState {self.address} inflight={self.inflight} healthy={self.healthy}>"


#: Outlier detection of a state registered without settings (tests): never ejects.
_NO_OUTLIER_DETECTION = OutlierDetectionConfig(enabled=False)


class BackendSettings(NamedTuple):
    """What a snapshot sets on a backend's live state when it is activated."""

    state: BackendState
    breaker: CircuitBreakerConfig
    outlier: OutlierDetectionConfig
    #: The snapshot's routes using the backend (for ``max_ejection_percent``).
    groups: tuple[Group, ...]


class BackendListener(Protocol):
    """Told of a backend's breaker and ejection transitions (the live event feed)."""

    def breaker_changed(self, state: BackendState, old: str, new: str) -> None: ...
    def ejection_changed(self, state: BackendState) -> None: ...


class BackendRegistry:
    """The `BackendState` of every configured backend, kept across snapshots.

    ``clock`` is monotonic seconds; it drives breakers and EWMA timestamps.
    ``ewma_decay_s`` is the EWMA time constant: about how long a backend that turned
    slow takes to look cheap enough to be tried again (tests may shorten it).
    """

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float],
        ewma_decay_s: float = EWMA_DECAY_S,
    ) -> None:
        if ewma_decay_s <= 0:
            raise ValueError("ewma_decay_s must be > 0")
        self._metrics = metrics
        self._clock = clock
        self._ewma_decay_s = ewma_decay_s
        self._states: dict[Endpoint, BackendState] = {}
        metrics.ejected_gauges = self._ejected_gauges
        #: Told of breaker and ejection transitions (None: nobody listens).
        self.listener: BackendListener | None = None

    def state(
        self,
        backend: Backend,
        breaker: CircuitBreakerConfig,
        outlier: OutlierDetectionConfig = _NO_OUTLIER_DETECTION,
    ) -> BackendState:
        """The state for ``backend``: the existing one, untouched, or a new one whose
        breaker and outlier detection start with the given settings.

        An existing state is never changed here: a snapshot being prepared must not
        change live behaviour. Its new settings are applied by `configure` when the
        snapshot goes live.
        """
        endpoint = endpoint_of(backend)
        found = self._states.get(endpoint)
        if found is not None:
            return found
        address = backend.address
        stats = self._metrics.backend(address)
        log_change = _breaker_logger(address)

        def breaker_changed(old: str, new: str) -> None:
            log_change(old, new)
            if self.listener is not None:
                self.listener.breaker_changed(created, old, new)

        def ejection_changed() -> None:
            if self.listener is not None:
                self.listener.ejection_changed(created)

        created = BackendState(
            address,
            endpoint,
            stats,
            CircuitBreaker(breaker, clock=self._clock, on_change=breaker_changed),
            Outlier(address, outlier, stats, clock=self._clock, on_change=ejection_changed),
            now=self._clock(),
            ewma_decay_s=self._ewma_decay_s,
        )
        self._states[endpoint] = created
        return created

    def configure(
        self,
        settings: Iterable[BackendSettings | tuple[BackendState, CircuitBreakerConfig]],
    ) -> None:
        """Apply the settings of a snapshot that just went live (breaker thresholds,
        outlier detection and the route groups it limits ejections by); a bare
        ``(state, breaker)`` pair sets the breaker only."""
        for item in settings:
            item[0].breaker.reconfigure(item[1])
            if isinstance(item, BackendSettings):
                item.state.outlier.reconfigure(item.outlier, item.groups)

    def retain(self, keep: Collection[Endpoint]) -> list[BackendState]:
        """Drop the states whose endpoint is not in ``keep``; return the dropped ones.

        Call after swapping in a snapshot built from a new config, with the endpoints
        it uses; stop the dropped backends' health probes.
        """
        dropped = [state for key, state in self._states.items() if key not in keep]
        for state in dropped:
            del self._states[state.endpoint]
        return dropped

    def get(self, endpoint: Endpoint) -> BackendState | None:
        return self._states.get(endpoint)

    def __iter__(self) -> Iterator[BackendState]:
        return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)

    def _ejected_gauges(self) -> list[tuple[str, int]]:
        seen: dict[str, int] = {}
        for state in self._states.values():
            ejected = int(state.outlier.ejected())
            seen[state.address] = max(seen.get(state.address, 0), ejected)
        return list(seen.items())


def _breaker_logger(address: str) -> Callable[[str, str], None]:
    def on_change(old: str, new: str) -> None:
        # Opening is the event an operator must see; the way back is routine.
        level = logging.WARNING if new == "open" else logging.INFO
        log.log(
            level,
            "circuit breaker state changed",
            extra={"fields": {"backend": address, "old": old, "new": new}},
        )

    return on_change
