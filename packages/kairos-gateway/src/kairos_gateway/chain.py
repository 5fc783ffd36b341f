"""The per-route policy chain: what a policy is, the phases it may act in, and the chain.

A `Policy` overrides only the phase hooks it needs; `Chain` keeps, per phase, the
hooks of the policies that declare it, highest priority first, so the request path
runs a phase as one loop over a tuple and an unused phase costs one empty-tuple test.
Chains are built once per snapshot and never change.

Phases of one proxied request, in order::

    on_headers       request line and headers arrived, body not read yet   sync
    on_request       before forwarding (the body may still be arriving)    sync or async
    before_upstream  target, headers and body of the upstream request      sync or async
    on_response      response head, upstream's or the gateway's own       sync
    on_chunk         each response body chunk from upstream, then b""     sync
    on_complete      the exchange ended, however it ended (log phase)      sync

Request bodies stream: a body larger than the route's read-ahead buffer (or chunked) goes
upstream as it arrives, so ``on_request`` may run before it is all here and
``before_upstream`` sees it as a `body.RequestBody`. A policy that needs the whole body
in memory says so with ``needs_body = True``; on its routes the body is read whole
(within the route's ``max_body_size``) before ``on_request``, and is ``bytes`` there.

``on_headers``, ``on_request`` and ``before_upstream`` may answer early: return a
`Response`, or raise a `KairosError` (rendered as problem+json). Returning None
continues. An ``on_request`` or ``before_upstream`` hook that must wait (a JWKS fetch,
a Redis round trip) returns an awaitable, or is a coroutine function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from kairos_core import KairosError
from tornado.httputil import HTTPHeaders

from .messages import Response, StreamedResponse

if TYPE_CHECKING:
    from kairos_core import CompiledRoute

    from .upstream import BodySource

__all__ = [
    "EMPTY_CHAIN",
    "PHASES",
    "Chain",
    "Fetched",
    "Policy",
    "PolicyFailed",
    "Replayed",
    "Request",
    "ResponseHead",
    "UpstreamRequest",
    "declared_phases",
]

#: Hook names in the order a request meets them.
PHASES: Final = (
    "on_headers",
    "on_request",
    "before_upstream",
    "on_response",
    "on_chunk",
    "on_complete",
)

Answer = Response | StreamedResponse | None
MaybeAsync = Answer | Awaitable[Answer]


class Request(Protocol):
    """What a policy sees of the client request (the exchange implements it)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str:
        """As received, still percent-encoded, without the query."""

    @property
    def query(self) -> str: ...
    @property
    def headers(self) -> HTTPHeaders:
        """The client's request headers (read them; change the upstream request's)."""

    @property
    def request_id(self) -> str: ...
    @property
    def client_ip(self) -> str:
        """The client's address (from ``X-Forwarded-For`` only via trusted proxies)."""

    @property
    def route(self) -> CompiledRoute | None: ...
    @property
    def params(self) -> Mapping[str, str]:
        """Path parameters of the matched route (``{id}`` -> value)."""

    #: The verified JWT claims, set by the JWT policy (None on routes without auth).
    claims: Mapping[str, Any] | None

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space for policies, one per request."""

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """Added to whatever response this request gets (yours, the backend's, a problem)."""

    @property
    def https(self) -> bool:
        """Did the client connect with TLS (or a trusted proxy say it did)?"""

    @property
    def peer_certificate(self) -> bytes | None:
        """The client's TLS certificate (DER), verified against ``listen.tls``'s
        ``client_ca_file``; None when the client sent none (or TLS is off)."""

    def add_default_headers(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Add ``pairs`` to the response where it has no header of that name (the
        backend's own choice wins). ``pairs`` is kept, not copied: do not change it."""

    def limit_body(self, max_bytes: int) -> None:
        """Refuse a request body over ``max_bytes`` with 413: at once when its
        Content-Length says so (raises), else as soon as it grows past the limit. The
        smallest limit set by any policy (or the route's ``max_body_size``) applies."""

    @property
    def status(self) -> int:
        """The response status sent (0 before; 499 when the client left first)."""

    @property
    def duration_s(self) -> float: ...
    @property
    def backend(self) -> str:
        """The address of the backend that answered (last tried), or ""."""

    def replay(self, state: dict[str, Any]) -> Replayed | None:
        """This request as a ``GET`` to send again later, through the route as a proxied
        request goes (the ``before_upstream`` hooks see it with ``state`` as its
        state); None when the request is not a proxied one. The cache's background
        revalidation uses it."""


class Replayed(Request, Protocol):
    """A request to send again (`Request.replay`)."""

    async def fetch(self, max_bytes: int) -> Fetched | None:
        """Send it upstream and read the whole answer, at most ``max_bytes`` of body.
        None when a ``before_upstream`` hook answered instead; a `KairosError` when the
        route got no answer (no backend, 502, 504)."""


@dataclass(slots=True)
class Fetched:
    """The backend's answer to a `Replayed` request."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    #: None: larger than the ``max_bytes`` asked for, not read.
    body: bytes | None


class UpstreamRequest:
    """The request about to be sent upstream; ``before_upstream`` hooks may change it.

    ``headers`` has no ``Host`` (it depends on the backend; set ``host`` to send a
    fixed one). ``target`` is sent byte for byte: a policy that rewrites it must keep
    it a valid origin-form target. ``body`` is ``bytes``, or the streamed body when the
    route's chain does not need it whole (see the module docstring); a hook may set
    ``bytes`` in its place.
    """

    __slots__ = ("body", "headers", "host", "target")

    def __init__(
        self,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | BodySource,
        host: str | None,
    ) -> None:
        self.target = target
        self.headers = headers
        self.body = body
        self.host = host


class ResponseHead:
    """Status and headers of a response on its way to the client (``on_response``);
    ``from_backend`` tells a backend's response from one of the gateway's own, whose
    body a hook may replace by setting ``body`` (a cache serving a stored copy)."""

    __slots__ = ("body", "from_backend", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        *,
        from_backend: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.from_backend = from_backend
        self.body: bytes | None = None


class Policy:
    """Base of every policy, built-in or plugin. Override the phases you act in.

    ``name`` and ``priority`` are set by whoever builds the chain (a plugin's name and
    priority, or a built-in's); higher priority runs first within every phase.
    """

    name: str = "policy"
    priority: int = 0
    #: The whole request body must be in memory before ``on_request`` (bounded by the
    #: route's ``max_body_size``); costs the streaming of every body on the route.
    needs_body: bool = False

    def on_headers(self, request: Request) -> Answer:
        return None

    def on_request(self, request: Request) -> MaybeAsync:
        return None

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> MaybeAsync:
        return None

    def on_response(self, request: Request, response: ResponseHead) -> None:
        return None

    def on_chunk(self, request: Request, chunk: bytes) -> bytes:
        """Transform one body chunk; called once more with ``b""`` at the end (return
        what is left to send). A policy that changes the length must drop the
        response's ``Content-Length`` in ``on_response``."""
        return chunk

    def on_complete(self, request: Request) -> None:
        return None


def declared_phases(policy: type[Policy]) -> list[str]:
    """The phases ``policy`` declares (overrides), in request order."""
    return [p for p in PHASES if getattr(policy, p) is not getattr(Policy, p)]


class PolicyFailed(KairosError):
    """A policy raised something other than a `KairosError`: a bug in it. Logged with
    the policy's name; the client gets a plain 500."""

    status = 500
    type = "policy_failed"
    title = "Internal error"

    def __init__(self, policy: str) -> None:
        super().__init__("the gateway failed to handle the request")
        self.policy = policy


Hook = tuple[Policy, Callable[..., Any]]


@dataclass(frozen=True, slots=True)
class Chain:
    """Per phase, ``(policy, hook)`` pairs of the policies that declare it."""

    policies: tuple[Policy, ...]
    #: Some policy needs the whole request body before ``on_request``.
    needs_body: bool
    on_headers: tuple[Hook, ...]
    on_request: tuple[Hook, ...]
    before_upstream: tuple[Hook, ...]
    on_response: tuple[Hook, ...]
    on_chunk: tuple[Hook, ...]
    on_complete: tuple[Hook, ...]

    @classmethod
    def build(
        cls,
        policies: Iterable[Policy],
        hook: Callable[[Policy, str], Callable[..., Any]] | None = None,
    ) -> Chain:
        """A chain of ``policies`` ordered by priority (stable for equal ones).

        ``hook(policy, phase)`` may wrap each declared hook (plugins are timed).
        """
        ordered = tuple(sorted(policies, key=lambda p: -p.priority))
        phases: dict[str, list[Hook]] = {phase: [] for phase in PHASES}
        for policy in ordered:
            for phase in declared_phases(type(policy)):
                method = getattr(policy, phase) if hook is None else hook(policy, phase)
                phases[phase].append((policy, method))
        return cls(
            ordered,
            any(p.needs_body for p in ordered),
            **{phase: tuple(hooks) for phase, hooks in phases.items()},
        )


#: The chain of a request no policy applies to.
EMPTY_CHAIN: Final = Chain.build(())
