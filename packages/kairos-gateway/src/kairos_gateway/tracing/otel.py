"""Spans recorded for the OpenTelemetry SDK and exported as OTLP/HTTP (the ``otel`` extra).

One exporting pipeline per gateway process, made of the SDK's parts: a
`BatchSpanProcessor` (queue, batches, its own thread, flush on shutdown) fed with the
SDK's `ReadableSpan`s, a `Resource` (``service.name``, ``service.version``,
``service.instance.id`` as host and pid, ``kairos.worker``), and `otlp.OtlpHttpExporter`
sending protobuf to ``endpoint``.

The spans of a request are recorded by the gateway itself rather than through the SDK's
`Tracer`: their shape is fixed (one SERVER span, a CLIENT span per try), so each is a few
fields filled as the exchange goes and turned into one `ReadableSpan` when it ends. The
SDK's general `Tracer` (sampler, context objects, attribute validation, a lock per span)
and its generic OTLP encoder cost about 45 us and 40 us per span, as much CPU as the
gateway spends on the whole request; this costs a small fraction (docs/benchmarks.md).

Sampling is parent-based with a ratio: a client's sampled flag is followed; a new trace
is drawn at ``sample_ratio`` in `OtelTracer.begin`, before anything is recorded (an
unsampled request costs what propagation costs).

Spans follow the HTTP semantic conventions: the SERVER span is named
``{method} {route template}`` (``{method}`` alone when no route matched), a CLIENT span
per try is named ``{method}`` and is the server span's child; a retried try has
``http.request.resend_count``. A 5xx answer, a failed try and a problem of the gateway's
own set the span's status to ERROR with ``error.type``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import traceback
from typing import TYPE_CHECKING, Any

from kairos_core.tracing import TracingConfig
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .._version import __version__
from . import RequestTrace, Tracer
from .context import TraceParent, parse_traceparent, parse_tracestate
from .otlp import OtlpHttpExporter

if TYPE_CHECKING:
    from tornado.httputil import HTTPHeaders

    from ..chain import Request
    from ..upstream import Endpoint, UpstreamError

__all__ = ["OtelTracer"]

log = logging.getLogger("kairos.gateway")

_SERVER = SpanKind.SERVER
_CLIENT = SpanKind.CLIENT
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_ERROR = Status(StatusCode.ERROR)
_CLIENT_CLOSED = 499
_NO_EVENTS: tuple[Event, ...] = ()


class _Pipeline:
    """What every span of the process shares: where it goes and what it describes."""

    __slots__ = ("processor", "resource", "scope")

    def __init__(
        self, processor: BatchSpanProcessor, resource: Resource, scope: InstrumentationScope
    ) -> None:
        self.processor = processor
        self.resource = resource
        self.scope = scope


class _Try:
    """The CLIENT span of one try (`tracing.TrySpan`), ended once: by the try's close,
    or with the server span if the exchange is over first (the last try is closed
    after the response was written)."""

    __slots__ = ("_open", "attributes", "events", "parent", "pipeline", "span_id", "start")

    def __init__(
        self,
        pipeline: _Pipeline,
        parent: SpanContext,
        span_id: int,
        attributes: dict[str, Any],
    ) -> None:
        self.pipeline = pipeline
        self.parent = parent
        self.span_id = span_id
        self.attributes = attributes
        self.events: list[Event] | None = None
        self.start = time.time_ns()
        self._open = True

    def answered(self, status: int) -> None:
        attributes = self.attributes
        attributes["http.response.status_code"] = status
        if status >= 500:
            attributes["error.type"] = str(status)

    def failed(self, exc: UpstreamError) -> None:
        self.attributes["error.type"] = exc.kind
        self.events = [_exception_event(exc)]

    def end(self) -> None:
        if not self._open:
            return
        self._open = False
        parent = self.parent
        attributes = self.attributes
        error = attributes.get("error.type")
        self.pipeline.processor.on_end(
            ReadableSpan(
                attributes["http.request.method"],
                SpanContext(parent.trace_id, self.span_id, False, _SAMPLED),
                parent,
                self.pipeline.resource,
                attributes,
                self.events or _NO_EVENTS,
                (),
                _CLIENT,
                None,
                _UNSET if error is None else Status(StatusCode.ERROR, error),
                self.start,
                time.time_ns(),
                self.pipeline.scope,
            )
        )


def _exception_event(exc: BaseException) -> Event:
    return Event(
        "exception",
        {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
        },
    )


class OtelTrace(RequestTrace):
    """A request's SERVER span, and its tries' CLIENT spans."""

    __slots__ = ("_context", "_error", "_last", "_method", "_parent", "_pipeline", "_start")

    def __init__(
        self,
        pipeline: _Pipeline,
        method: str,
        parent: TraceParent | None,
        state: str | None,
    ) -> None:
        self._pipeline = pipeline
        self._method = method
        self._start = time.time_ns()
        if parent is None:
            trace_id = random.getrandbits(128) or 1
            self._parent: SpanContext | None = None
        else:
            trace_id = int(parent.trace_id, 16)
            self._parent = SpanContext(trace_id, int(parent.span_id, 16), True, _SAMPLED)
        self._context = SpanContext(trace_id, random.getrandbits(64) or 1, False, _SAMPLED)
        self._trace_id = f"{trace_id:032x}"
        self.sampled = True
        self.state = state
        self._error: str | None = None
        self._last: _Try | None = None

    def start_try(self, endpoint: Endpoint, method: str, target: str) -> tuple[str, _Try]:
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": endpoint.host,
            "server.port": endpoint.port,
            "url.full": endpoint.label + target.partition("?")[0],
            "network.peer.address": endpoint.host,
        }
        last = self._last
        if last is not None:
            attributes["http.request.resend_count"] = (
                last.attributes.get("http.request.resend_count", 0) + 1
            )
        span_id = random.getrandbits(64) or 1
        self._last = attempt = _Try(self._pipeline, self._context, span_id, attributes)
        return f"00-{self._trace_id}-{span_id:016x}-01", attempt

    def failed(self, error_type: str) -> None:
        self._error = error_type

    def finish(self, request: Request) -> None:
        if self._last is not None:
            self._last.end()  # a child ends before its parent
        route = request.route
        status = request.status
        headers = request.headers
        attributes: dict[str, Any] = {
            "http.request.method": self._method,
            "url.path": request.path,
            "url.scheme": "https" if request.https else "http",
        }
        if route is not None:
            attributes["http.route"] = route.template
        host = headers.get("Host")
        if host:
            name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if name and port.isdigit():
                attributes["server.address"] = name
                attributes["server.port"] = int(port)
            else:
                attributes["server.address"] = host
        attributes["network.peer.address"] = request.client_ip
        attributes["network.protocol.version"] = "1.1"
        agent = headers.get("User-Agent")
        if agent:
            attributes["user_agent.original"] = agent
        attributes["kairos.request_id"] = request.request_id
        if request.backend:
            attributes["kairos.backend"] = request.backend
        outcome = _UNSET
        if status == _CLIENT_CLOSED:
            attributes["kairos.client_closed"] = True
        elif status:
            attributes["http.response.status_code"] = status
            if status >= 500:
                error = self._error or str(status)
                attributes["error.type"] = error
                outcome = _ERROR if self._error is None else Status(StatusCode.ERROR, error)
        pipeline = self._pipeline
        pipeline.processor.on_end(
            ReadableSpan(
                self._method if route is None else f"{self._method} {route.template}",
                self._context,
                self._parent,
                pipeline.resource,
                attributes,
                _NO_EVENTS,
                (),
                _SERVER,
                None,
                outcome,
                self._start,
                time.time_ns(),
                pipeline.scope,
            )
        )


class OtelTracer(Tracer):
    """Records and exports spans (see the module docstring)."""

    def __init__(self, config: TracingConfig, *, worker: int | None = None) -> None:
        attributes: dict[str, Any] = {
            "service.name": config.service_name,
            "service.version": __version__,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "kairos.worker": 0 if worker is None else worker,
        }
        resource = Resource.create(attributes)
        scope = InstrumentationScope("kairos-gateway", __version__)
        exporter = OtlpHttpExporter(
            config.endpoint,
            resource=dict(resource.attributes),
            scope=("kairos-gateway", __version__),
            headers=config.headers,
            timeout_s=config.export_timeout_ms / 1000,
        )
        self._processor = processor = BatchSpanProcessor(
            exporter,
            max_queue_size=config.max_queue,
            schedule_delay_millis=config.export_interval_ms,
            max_export_batch_size=min(config.max_export_batch, config.max_queue),
            export_timeout_millis=config.export_timeout_ms,
        )
        self._pipeline = _Pipeline(processor, resource, scope)
        self._ratio = config.sample_ratio
        self._closed = False
        #: The SDK's own switch (OTEL_SDK_DISABLED=true): then the gateway only propagates.
        self._recording = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
        if not self._recording:
            log.warning("OTEL_SDK_DISABLED is set: trace context propagated, no span exported")

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
                return OtelTrace(self._pipeline, method, parent, tracestate)
            return RequestTrace(parent, tracestate)
        ratio = self._ratio
        if ratio >= 1.0 or random.random() < ratio:
            return OtelTrace(self._pipeline, method, None, None)
        unsampled = RequestTrace(None, None)
        unsampled.sampled = False
        return unsampled

    async def aclose(self) -> None:
        """Export the spans still queued (within the export timeout), then stop."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._processor.shutdown)
