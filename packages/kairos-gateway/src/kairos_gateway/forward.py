"""The forwarding step: pick a backend, try it, retry on failure, hand back the answer.

Each try is an `Attempt`, the one owner of what a try holds on its backend: the
in-flight count (taken when the attempt starts), the breaker permit and the latency
observation. `Attempt.close` gives both back exactly once, whatever happened (answer
relayed, failure, retry, cancellation, client gone); a try being retried is closed
before the backoff pause, so a client that leaves during the pause leaves nothing
behind.

Retrying is decided in one place, `RetryPolicy.decide` (policy, method, retry count,
budget and deadline), plus `decide_stale` for a kept-alive connection the backend had
closed. A try is only ever retried before any response byte reached the client, and
only when the request body can be sent again: a streamed body larger than the route's
replay buffer makes the first failure final (logged as such).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING

from kairos_core import (
    BackendSaturated,
    BadRequest,
    CircuitOpen,
    NoHealthyBackend,
    UpstreamError,
    UpstreamTimeout,
)

from .body import RequestBody
from .headers import header_value
from .retry import RetryBudget, Stop, decide_stale
from .upstream import (
    RequestBodyFailed,
    StaleConnection,
    UpstreamPool,
    UpstreamResponse,
    UpstreamSaturated,
)
from .upstream import UpstreamError as UpstreamFailure
from .upstream import UpstreamTimeout as UpstreamTimedOut

if TYPE_CHECKING:
    from .backends import BackendState
    from .breaker import Permit
    from .chain import UpstreamRequest
    from .snapshot import RouteRuntime
    from .tracing import RequestTrace, TrySpan

__all__ = ["Attempt", "forward"]

log = logging.getLogger("kairos.gateway")


class Attempt:
    """One try of one request against one backend (see the module docstring)."""

    __slots__ = ("_open", "_sent", "index", "permit", "span", "state")

    def __init__(self, index: int, state: BackendState, permit: Permit) -> None:
        self.index = index
        self.state = state
        self.permit = permit
        #: The try's client span, when spans are recorded (ended by `close`).
        self.span: TrySpan | None = None
        state.inflight += 1
        self._open = True
        self._sent = perf_counter()

    def answered(self, status: int) -> None:
        """The response head arrived: record the latency, settle the permit by status,
        tell outlier detection (a 5xx extends its streak; otherwise, in the usual case
        of no streak, one attribute test)."""
        state = self.state
        elapsed = perf_counter() - self._sent
        state.stats.duration.observe(elapsed)
        state.observe_latency(elapsed, time.monotonic())
        self.permit.response(status)
        if self.span is not None:
            self.span.answered(status)
        if status >= 500:
            state.outlier.server_error()
        elif state.outlier.errors:
            state.outlier.success()

    def failed(self, exc: UpstreamFailure, request_id: str) -> None:
        """The backend failed this try: count it against the backend, its breaker and
        outlier detection."""
        self.permit.failure()
        if self.span is not None:
            self.span.failed(exc)
        self.state.stats.error(exc.kind)
        self.state.outlier.failure(exc.kind)
        log.warning(
            "upstream request failed",
            extra={
                "fields": {
                    "request_id": request_id,
                    "backend": self.state.address,
                    "kind": exc.kind,
                    "error": str(exc) or type(exc).__name__,
                }
            },
        )

    def close(self) -> None:
        """End the try: give back the in-flight count and, if still unsettled (the
        client left, a stale connection), the permit without a verdict. Idempotent."""
        if self._open:
            self._open = False
            self.state.inflight -= 1
            self.permit.release()
            if self.span is not None:
                self.span.end()


def _admit(runtime: RouteRuntime, client_key: str, tried: Sequence[int]) -> Attempt:
    """Start an attempt on a backend the balancer picks among the available ones not
    yet tried (all of them when every one was)."""
    backends = runtime.backends
    exclude: list[int] = list(tried)
    for _ in range(len(backends) + 1):
        index = runtime.balancer.pick(backends, client_key=client_key, exclude=exclude)
        if index is None:
            break
        permit = backends[index].breaker.acquire()
        if permit is not None:
            return Attempt(index, backends[index], permit)
        exclude.append(index)  # lost a half-open probe slot to a concurrent request
    # Say why, by the backends the breaker alone keeps out (healthy, not ejected).
    open_breakers = [
        b.breaker.retry_after_s()
        for b in backends
        if b.healthy and not b.outlier.ejected() and not b.breaker.available()
    ]
    if open_breakers:
        raise CircuitOpen(
            "no backend of this route is available (open circuit breakers)",
            retry_after_s=min(open_breakers),
        )
    raise NoHealthyBackend(
        "no backend of this route is available (failed health checks, or ejected for failing)"
    )


def _saturated(
    runtime: RouteRuntime, tried: list[int], index: int, budget: RetryBudget | None
) -> Stop | None:
    """May a request refused by a saturated backend go to another one? None: yes.

    Only on a route with a retry policy, within its retry count and budget, and only
    when a backend not yet tried is available (the request never left the gateway, so
    the method does not matter).
    """
    policy = runtime.retry
    if policy is None:
        return "no_policy"
    if len(tried) >= policy.max_retries:
        return "max_retries"
    others = [
        i for i, b in enumerate(runtime.backends) if i != index and i not in tried and b.available()
    ]
    if not others:
        return "max_retries"
    if budget is not None and not budget.try_spend():
        return "budget_exhausted"
    return None


def _rewound(upstream: UpstreamRequest, request_id: str) -> bool:
    """Can the request be sent again? Rewinds a streamed body to its first byte."""
    body = upstream.body
    if not isinstance(body, RequestBody) or body.rewind():
        return True
    log.warning(
        "request not retried: its body was larger than the replay buffer",
        extra={"fields": {"request_id": request_id, "body_bytes": body.received}},
    )
    return False


class Tries:
    """The tries of one request: which backends were tried, the deadline, the budget,
    and the decisions between tries. `forward` drives it with the pooled client, the
    WebSocket upgrade with a connection of its own."""

    __slots__ = (
        "_client_key",
        "_loop",
        "deadline",
        "method",
        "replayed",
        "request_id",
        "rng",
        "runtime",
        "tried",
    )

    def __init__(
        self,
        runtime: RouteRuntime,
        *,
        method: str,
        client_ip: str,
        request_id: str,
        rng: random.Random,
    ) -> None:
        self.runtime = runtime
        self.method = method
        self.request_id = request_id
        self.rng = rng
        self._loop = loop = asyncio.get_running_loop()
        total = runtime.total_timeout_s
        self.deadline = None if total is None else loop.time() + total
        if runtime.budget is not None:
            runtime.budget.on_request()
        self._client_key = client_ip if runtime.balancer.uses_client_key else ""
        self.tried: list[int] = []
        self.replayed = False

    def start(self) -> tuple[Attempt, float, float]:
        """The next attempt, with its connect and read timeouts (cut to what is left of
        the route's total deadline; past it, `UpstreamTimeout`)."""
        runtime = self.runtime
        attempt = _admit(runtime, self._client_key, self.tried)
        connect_timeout = runtime.connect_timeout_s
        read_timeout = runtime.read_timeout_s
        if self.deadline is not None:
            remaining = self.deadline - self._loop.time()
            if remaining <= 0:
                attempt.close()
                raise UpstreamTimeout("the route's total deadline passed before an answer")
            connect_timeout = min(connect_timeout, remaining)
            read_timeout = min(read_timeout, remaining)
        return attempt, connect_timeout, read_timeout

    async def after_failure(
        self, attempt: Attempt, exc: UpstreamFailure, upstream: UpstreamRequest | None = None
    ) -> None:
        """The try failed: return (after the backoff pause) to try again, or raise the
        502/504 problem. ``upstream``: the request, whose body must rewind for a retry."""
        attempt.failed(exc, self.request_id)
        attempt.close()
        runtime = self.runtime
        policy = runtime.retry
        decision = (
            "no_policy"
            if policy is None
            else policy.decide(
                self.method,
                len(self.tried),
                failed=True,
                retry_after=None,
                budget=runtime.budget,
                now=self._loop.time(),
                deadline=self.deadline,
                rng=self.rng,
            )
        )
        if isinstance(decision, float) and (
            upstream is None or _rewound(upstream, self.request_id)
        ):
            self.tried.append(attempt.index)
            runtime.stats.retry(exc.kind)
            if decision > 0:
                await asyncio.sleep(decision)
            return
        if decision == "budget_exhausted":
            runtime.stats.retry(decision)
        if isinstance(exc, UpstreamTimedOut):
            raise UpstreamTimeout("the backend did not answer in time") from exc
        raise UpstreamError("the backend could not be reached or answered badly") from exc

    def retry_status(
        self,
        attempt: Attempt,
        status: int,
        headers: Sequence[tuple[str, str]],
        upstream: UpstreamRequest | None = None,
    ) -> float | None:
        """The backend answered ``status`` with ``headers`` (already recorded on the
        attempt): the pause before trying again, or None to keep this answer. The
        caller drops the answer and closes the attempt at once (a rewound body's old
        writer must stop before anything else runs), then pauses."""
        runtime = self.runtime
        policy = runtime.retry
        if policy is None or not policy.status_retryable(status):
            return None
        decision = policy.decide(
            self.method,
            len(self.tried),
            failed=False,
            retry_after=header_value(headers, "retry-after"),
            budget=runtime.budget,
            now=self._loop.time(),
            deadline=self.deadline,
            rng=self.rng,
        )
        if isinstance(decision, float) and (
            upstream is None or _rewound(upstream, self.request_id)
        ):
            self.tried.append(attempt.index)
            runtime.stats.retry(f"status_{status}")
            return decision
        if decision == "budget_exhausted":
            runtime.stats.retry(decision)
        return None


async def forward(
    runtime: RouteRuntime,
    upstream: UpstreamRequest,
    *,
    method: str,
    client_ip: str,
    request_id: str,
    pool: UpstreamPool,
    rng: random.Random,
    trace: RequestTrace | None = None,
) -> tuple[Attempt, UpstreamResponse]:
    """Try backends until one answers in a way not worth retrying; return that answer
    with its still-open attempt (the caller relays the body, then closes the attempt).

    A failure that is not retried becomes a 502/504 problem (raised); a response, even
    a retryable one, is returned as it is once retries are spent. With a ``trace``,
    every try carries a ``traceparent`` of its own.
    """
    tries = Tries(runtime, method=method, client_ip=client_ip, request_id=request_id, rng=rng)
    stats = runtime.stats
    while True:
        attempt, connect_timeout, read_timeout = tries.start()
        endpoint = attempt.state.endpoint
        headers = [("Host", upstream.host or endpoint.host_header), *upstream.headers]
        if trace is not None:
            traceparent, attempt.span = trace.start_try(endpoint, method, upstream.target)
            headers.append(("Traceparent", traceparent))
        try:
            response = await pool.request(
                endpoint,
                method,
                upstream.target,
                headers,
                upstream.body,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                limits=runtime.limits[attempt.index],
            )
        except UpstreamSaturated as exc:
            # Nothing was sent: another backend may take it, whatever the method.
            attempt.close()
            stop = _saturated(runtime, tries.tried, attempt.index, runtime.budget)
            if stop is None:
                tries.tried.append(attempt.index)
                stats.retry(exc.kind)
                continue
            if stop == "budget_exhausted":
                stats.retry(stop)
            limits = runtime.limits[attempt.index]
            raise BackendSaturated(
                "the backend has no free connection (connection_limits)",
                retry_after_s=limits.pending_timeout_s,
            ) from exc
        except RequestBodyFailed as exc:
            # The client's side failed (it left, or a limit cut it off): not the
            # backend's fault, and nothing to retry.
            attempt.close()
            raise BadRequest("the request body did not arrive whole") from exc
        except StaleConnection as exc:
            attempt.close()
            stop = decide_stale(method, tries.replayed, runtime.budget)
            if stop is None and _rewound(upstream, request_id):
                tries.replayed = True
                stats.retry(exc.kind)
                continue  # the same backend, at once: it never saw the request
            if stop == "budget_exhausted":
                stats.retry(stop)
            raise UpstreamError("the backend closed the connection before answering") from exc
        except UpstreamFailure as exc:
            await tries.after_failure(attempt, exc, upstream)
            continue
        except BaseException:
            attempt.close()
            raise
        status = response.status
        attempt.answered(status)
        pause = tries.retry_status(attempt, status, response.headers, upstream)
        if pause is not None:
            response.abort()  # no await since the rewind: the old writer stops here
            attempt.close()
            if pause > 0:
                await asyncio.sleep(pause)
            continue
        return attempt, response
