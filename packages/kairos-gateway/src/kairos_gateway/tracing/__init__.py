"""Tracing: the W3C trace context of each request, and (optionally) its spans.

`build_tracer` turns the ``tracing`` block into the process's `Tracer` (None when
propagation is off). For every request the exchange calls `Tracer.begin`, which gives a
`RequestTrace`: the trace id (the client's, from a valid ``traceparent``, or a new one),
written to the access log and to problem bodies, and per try upstream a ``traceparent``
with a span id of its own (`RequestTrace.start_try`). That is all propagation costs: one
header lookup, a random id, a formatted string per try.

With ``exporter: "otlp"`` the tracer is `otel.OtelTracer` (the OpenTelemetry SDK, the
``kairos-gateway[otel]`` extra): the same calls record a server span per request and a
client span per try, owned by the try's `forward.Attempt` and ended when it closes, so
retries show as sibling client spans under the server span.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from kairos_core import ConfigError, FieldError
from kairos_core.tracing import TracingConfig

from .context import (
    TraceParent,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    parse_tracestate,
)

if TYPE_CHECKING:
    from tornado.httputil import HTTPHeaders

    from ..chain import Request
    from ..upstream import Endpoint, UpstreamError

__all__ = ["RequestTrace", "Tracer", "TrySpan", "build_tracer"]


class TrySpan(Protocol):
    """The span of one try upstream (see `forward.Attempt`)."""

    def answered(self, status: int) -> None: ...
    def failed(self, exc: UpstreamError) -> None: ...
    def end(self) -> None: ...


class RequestTrace:
    """The trace context of one request (propagation only: nothing is recorded)."""

    __slots__ = ("_trace_id", "sampled", "state")

    def __init__(self, parent: TraceParent | None, state: str | None) -> None:
        if parent is None:
            self._trace_id = new_trace_id()
            #: Nothing upstream of the gateway decided: let the backends record.
            self.sampled = True
            self.state: str | None = None
        else:
            self._trace_id = parent.trace_id
            self.sampled = parent.sampled
            self.state = state

    @property
    def trace_id(self) -> str:
        return self._trace_id

    def start_try(self, endpoint: Endpoint, method: str, target: str) -> tuple[str, TrySpan | None]:
        """The ``traceparent`` for a new try upstream (a new span id every time), and
        the try's span when spans are recorded."""
        return format_traceparent(self._trace_id, new_span_id(), self.sampled), None

    def failed(self, error_type: str) -> None:
        """The gateway answers with a problem of type ``error_type``."""

    def finish(self, request: Request) -> None:
        """The exchange ended (called once, from `respond.Responder._complete`)."""


class Tracer:
    """Propagation only: a `RequestTrace` per request."""

    def begin(self, method: str, headers: HTTPHeaders) -> RequestTrace:
        fields = headers._as_list  # one lookup; the common case has no traceparent
        values = fields.get("Traceparent")
        if values is None:
            return RequestTrace(None, None)
        parent = parse_traceparent(values)
        state = fields.get("Tracestate")
        return RequestTrace(
            parent, parse_tracestate(state) if parent is not None and state else None
        )

    async def aclose(self) -> None:
        """Send what is still waiting to go (an exporting tracer), then stop."""


def build_tracer(config: TracingConfig | None, *, worker: int | None = None) -> Tracer | None:
    """The process's tracer for ``config`` (None: no ``tracing`` block, or propagation
    off). Raises `ConfigError` when an exporter is asked for and the OpenTelemetry SDK
    is not installed."""
    if config is None:
        return None  # off by default: the plain path pays nothing for tracing
    if config.exporter == "none":
        return Tracer() if config.propagate else None
    try:
        from .otel import OtelTracer
    except ImportError as exc:
        raise ConfigError(
            [
                FieldError(
                    ("tracing", "exporter"),
                    "needs the OpenTelemetry SDK: pip install 'kairos-gateway[otel]' "
                    f"({exc.name or exc} is missing)",
                    config.exporter,
                )
            ]
        ) from None
    return OtelTracer(config, worker=worker)
