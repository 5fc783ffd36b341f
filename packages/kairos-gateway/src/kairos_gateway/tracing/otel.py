"""Spans through the OpenTelemetry SDK, exported as OTLP/HTTP (the ``otel`` extra).

One `TracerProvider` per gateway process: parent-based ratio sampling (a client's
sampled flag is followed; new traces are drawn at ``sample_ratio`` in `OtelTracer.begin`,
before any span is made), a
`BatchSpanProcessor` sending protobuf to ``endpoint`` from its own thread, and the
resource attributes ``service.name``, ``service.version``, ``service.instance.id``
(host and pid) and ``kairos.worker``.

Spans follow the HTTP semantic conventions: a SERVER span per request named
``{method} {route template}`` (``{method}`` alone when no route matched), a CLIENT span
per try named ``{method}``, child of the server span; a retried try has
``http.request.resend_count``. A 5xx answer, a failed try and a problem of the gateway's
own set the span's status to ERROR with ``error.type``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from typing import TYPE_CHECKING, Any

from kairos_core.tracing import TracingConfig
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._version import __version__
from . import RequestTrace, Tracer
from .context import TraceParent, parse_traceparent, parse_tracestate

if TYPE_CHECKING:
    from tornado.httputil import HTTPHeaders

    from ..chain import Request
    from ..upstream import Endpoint, UpstreamError

__all__ = ["OtelTracer"]

log = logging.getLogger("kairos.gateway")

_SERVER = SpanKind.SERVER
_CLIENT = SpanKind.CLIENT
_ERROR = StatusCode.ERROR
_CLIENT_CLOSED = 499


class _Try:
    """The CLIENT span of one try (`tracing.TrySpan`), ended once: by the try's close,
    or with the server span if the exchange is over first (the last try is closed
    after the response was written)."""

    __slots__ = ("_open", "span")

    def __init__(self, span: trace_api.Span) -> None:
        self.span = span
        self._open = True

    def answered(self, status: int) -> None:
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(_ERROR)

    def failed(self, exc: UpstreamError) -> None:
        span = self.span
        span.set_attribute("error.type", exc.kind)
        span.record_exception(exc)
        span.set_status(Status(_ERROR, str(exc) or exc.kind))

    def end(self) -> None:
        if self._open:
            self._open = False
            self.span.end()


class OtelTrace(RequestTrace):
    """A request's SERVER span, and its tries' CLIENT spans."""

    __slots__ = ("_context", "_error", "_last", "_method", "_span", "_tracer", "_tries")

    def __init__(
        self,
        tracer: trace_api.Tracer,
        method: str,
        parent: TraceParent | None,
        state: str | None,
    ) -> None:
        context = None
        if parent is not None:
            remote = trace_api.SpanContext(
                int(parent.trace_id, 16),
                int(parent.span_id, 16),
                is_remote=True,
                trace_flags=trace_api.TraceFlags(1 if parent.sampled else 0),
            )
            context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote))
        self._tracer = tracer
        self._method = method
        self._span = span = tracer.start_span(
            method, context, _SERVER, {"http.request.method": method}
        )
        self._context = trace_api.set_span_in_context(span)
        own = span.get_span_context()
        self._trace_id = f"{own.trace_id:032x}"
        self.sampled = own.trace_flags.sampled
        self.state = state
        self._error: str | None = None
        self._tries = 0
        self._last: _Try | None = None

    def start_try(self, endpoint: Endpoint, method: str, target: str) -> tuple[str, _Try]:
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": endpoint.host,
            "server.port": endpoint.port,
            "url.full": endpoint.label + target.partition("?")[0],
            "network.peer.address": endpoint.host,
        }
        if self._tries:
            attributes["http.request.resend_count"] = self._tries
        self._tries += 1
        span = self._tracer.start_span(method, self._context, _CLIENT, attributes)
        own = span.get_span_context()
        flags = "01" if self.sampled else "00"
        self._last = last = _Try(span)
        return f"00-{self._trace_id}-{own.span_id:016x}-{flags}", last

    def failed(self, error_type: str) -> None:
        self._error = error_type

    def finish(self, request: Request) -> None:
        if self._last is not None:
            self._last.end()  # a child ends before its parent
        span = self._span
        if not span.is_recording():
            span.end()
            return
        route = request.route
        status = request.status
        attributes: dict[str, Any] = {
            "url.path": request.path,
            "url.scheme": "https" if request.https else "http",
            "network.peer.address": request.client_ip,
            "network.protocol.version": "1.1",
            "kairos.request_id": request.request_id,
        }
        host = request.headers.get("Host")
        if host:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if name and port.isdigit():
                attributes["server.address"] = name
                attributes["server.port"] = int(port)
            else:
                attributes["server.address"] = host
        agent = request.headers.get("User-Agent")
        if agent:
            attributes["user_agent.original"] = agent
        if route is not None:
            attributes["http.route"] = route.template
            span.update_name(f"{self._method} {route.template}")
        if request.backend:
            attributes["kairos.backend"] = request.backend
        if status == _CLIENT_CLOSED:
            attributes["kairos.client_closed"] = True
        elif status:
            attributes["http.response.status_code"] = status
            if status >= 500:
                attributes["error.type"] = self._error or str(status)
                span.set_status(Status(_ERROR, self._error))
        span.set_attributes(attributes)
        span.end()


class OtelTracer(Tracer):
    """Records and exports spans (see the module docstring)."""

    def __init__(self, config: TracingConfig, *, worker: int | None = None) -> None:
        attributes: dict[str, Any] = {
            "service.name": config.service_name,
            "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "kairos.worker": 0 if worker is None else worker,
        }
        self._provider = provider = TracerProvider(
            # The ratio is applied in `begin`, before any span is made: the SDK is only
            # asked for the spans of sampled traces (an unsampled one costs what
            # propagation costs), and follows their parent.
            sampler=ParentBased(ALWAYS_ON),
            resource=Resource.create(attributes),
            shutdown_on_exit=False,
        )
        exporter = OTLPSpanExporter(
            endpoint=config.endpoint,
            headers=dict(config.headers) or None,
            timeout=config.export_timeout_ms / 1000,
        )
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=config.max_queue,
                schedule_delay_millis=config.export_interval_ms,
                max_export_batch_size=min(config.max_export_batch, config.max_queue),
                export_timeout_millis=config.export_timeout_ms,
            )
        )
        self._tracer = provider.get_tracer("kairos-gateway", __version__)
        #: OTEL_SDK_DISABLED=true gives a tracer that records nothing (and whose spans
        #: have no ids): then the gateway only propagates.
        self._recording = not isinstance(self._tracer, trace_api.NoOpTracer)
        if not self._recording:
            log.warning("OTEL_SDK_DISABLED is set: trace context propagated, no span exported")
        self._ratio = config.sample_ratio
        self._closed = False

    def begin(self, method: str, headers: HTTPHeaders) -> RequestTrace:
        """A recording trace when the client's parent is sampled, or for a new trace
        at ``sample_ratio``; else a propagation-only one with the sampled flag off."""
        if not self._recording:
            return super().begin(method, headers)
        fields = headers._as_list
        values = fields.get("Traceparent")
        parent = None if values is None else parse_traceparent(values)
        state = fields.get("Tracestate") if parent is not None else None
        tracestate = parse_tracestate(state) if state else None
        if parent is not None:
            if parent.sampled:
                return OtelTrace(self._tracer, method, parent, tracestate)
            return RequestTrace(parent, tracestate)
        ratio = self._ratio
        if ratio >= 1.0 or random.random() < ratio:
            return OtelTrace(self._tracer, method, None, None)
        unsampled = RequestTrace(None, None)
        unsampled.sampled = False
        return unsampled

    async def aclose(self) -> None:
        """Export the spans still queued (within the export timeout), then stop."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._provider.shutdown)
