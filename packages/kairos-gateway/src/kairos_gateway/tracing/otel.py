"""Spans recorded by the gateway and exported as OTLP/HTTP (the ``otel`` extra).

One exporting pipeline per gateway process: the OpenTelemetry SDK's `Resource`
(``service.name``, ``service.version``, ``service.instance.id`` as host and pid,
``kairos.worker``, and what ``OTEL_RESOURCE_ATTRIBUTES`` adds), encoded once; each
finished span queued as a record (a tuple); `export.SpanExport` encoding
(`spans.SpanShapes`) and sending them in batches from its own thread.

The spans of a request are recorded by the gateway itself rather than through the SDK's
`Tracer` and span processor: their shape is fixed (one SERVER span, a CLIENT span per
try), so each is a few fields filled as the exchange goes and one tuple when it ends;
the event loop does nothing more (about 3 us per request for both). The SDK's general
`Tracer` (sampler, context objects, attribute validation, a lock per span) and its
generic OTLP encoder cost about 45 us and 40 us per span, as much CPU as the gateway
spends on the whole request (decisions 34 and 42).

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

from .._version import __version__
from . import RequestTrace, Tracer, otlp
from .context import TraceParent, parse_traceparent, parse_tracestate
from .export import OtlpHttpSender, SpanExport
from .spans import SpanShapes

if TYPE_CHECKING:
    from collections.abc import Callable

    from tornado.httputil import HTTPHeaders

    from ..chain import Request
    from ..upstream import Endpoint, UpstreamError

__all__ = ["OtelTracer"]

log = logging.getLogger("kairos.gateway")

_MASK64 = (1 << 64) - 1


class _Pipeline:
    """What every span of the process shares: the queue its record goes to, and the
    encoders the export thread runs on records."""

    __slots__ = ("add", "client", "server")

    def __init__(self, add: Callable[[tuple[Any, ...]], None], shapes: SpanShapes) -> None:
        self.add = add
        self.server = shapes.server
        self.client = shapes.client


class _Try:
    """The CLIENT span of one try (`tracing.TrySpan`), ended once: by the try's close,
    or with the server span if the exchange is over first (the last try is closed
    after the response was written)."""

    __slots__ = (
        "_open",
        "endpoint",
        "error",
        "events",
        "method",
        "resend",
        "span_id",
        "start",
        "status",
        "target",
        "trace",
    )

    def __init__(
        self,
        trace: OtelTrace,
        endpoint: Endpoint,
        method: str,
        target: str,
        span_id: int,
        resend: int,
    ) -> None:
        self.trace = trace
        self.endpoint = endpoint
        self.method = method
        self.target = target
        self.span_id = span_id
        #: 0 for the first try, then 1, 2... (``http.request.resend_count``).
        self.resend = resend
        self.status: int | None = None
        self.error: str | None = None
        self.events = b""
        self.start = time.time_ns()
        self._open = True

    def answered(self, status: int) -> None:
        self.status = status
        if status >= 500:
            self.error = str(status)

    def failed(self, exc: UpstreamError) -> None:
        self.error = exc.kind
        self.events = _exception_event(exc)

    def end(self) -> None:
        if not self._open:
            return
        self._open = False
        trace = self.trace
        pipeline = trace._pipeline
        pipeline.add(
            (
                pipeline.client,
                trace._ids,
                self.span_id,
                self.start,
                time.time_ns(),
                self.endpoint,
                self.method,
                self.target,
                self.resend,
                self.status,
                self.error,
                self.events,
            )
        )


def _exception_event(exc: BaseException) -> bytes:
    return otlp.event(
        "exception",
        time.time_ns(),
        {
            "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
        },
    )


class OtelTrace(RequestTrace):
    """A request's SERVER span, and its tries' CLIENT spans."""

    __slots__ = ("_error", "_ids", "_last", "_method", "_parent_id", "_pipeline", "_start")

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
        # One draw for the trace id and the server span's id: (trace << 64) | span.
        ids = random.getrandbits(192)
        if not (ids >> 64 and ids & _MASK64):  # an all-zero id (p = 2**-64) is invalid
            ids |= 1 | 1 << 64
        if parent is None:
            self._trace_id = f"{ids >> 64:032x}"
            self._parent_id: str | None = None
        else:
            self._trace_id = parent.trace_id
            self._parent_id = parent.span_id
            ids = int(parent.trace_id, 16) << 64 | ids & _MASK64
        self._ids = ids
        self.sampled = True
        self.state = state
        self._error: str | None = None
        self._last: _Try | None = None

    def start_try(self, endpoint: Endpoint, method: str, target: str) -> tuple[str, _Try]:
        last = self._last
        span_id = random.getrandbits(64) or 1
        self._last = attempt = _Try(
            self, endpoint, method, target, span_id, 0 if last is None else last.resend + 1
        )
        return f"00-{self._trace_id}-{span_id:016x}-01", attempt

    def failed(self, error_type: str) -> None:
        self._error = error_type

    def finish(self, request: Request) -> None:
        last = self._last
        if last is not None:
            last.end()  # a child ends before its parent
        route = request.route
        # The header lines as the client sent them: a lookup without the name's
        # normalisation each `HTTPHeaders.get` does.
        fields = request.headers._as_list
        host = fields.get("Host")
        agent = fields.get("User-Agent")
        pipeline = self._pipeline
        pipeline.add(
            (
                pipeline.server,
                self._ids,
                self._parent_id,
                self._start,
                time.time_ns(),
                self._method,
                None if route is None else route.template,
                request.https,
                ",".join(host) if host else None,
                request.backend,
                request.status,
                self._error,
                request.client_ip,
                request.path,
                ",".join(agent) if agent else None,
                request.request_id,
            )
        )


class OtelTracer(Tracer):
    """Records and exports spans (see the module docstring)."""

    def __init__(self, config: TracingConfig, *, worker: int | None = None) -> None:
        self._ratio = config.sample_ratio
        self._closed = False
        #: The SDK's own switch (OTEL_SDK_DISABLED=true): then the gateway only propagates.
        self._recording = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
        self._export: SpanExport | None = None
        if not self._recording:
            log.warning("OTEL_SDK_DISABLED is set: trace context propagated, no span exported")
            return
        # The SDK's resource: its telemetry.sdk.* attributes, OTEL_RESOURCE_ATTRIBUTES
        # and OTEL_SERVICE_NAME under the gateway's own (which win).
        resource = Resource.create(
            {
                "service.name": config.service_name,
                "service.version": __version__,
                "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
                "kairos.worker": 0 if worker is None else worker,
            }
        )
        sender = OtlpHttpSender(
            config.endpoint,
            resource=otlp.attributes(dict(resource.attributes), otlp.RESOURCE_ATTRIBUTE),
            scope=otlp.scope("kairos-gateway", __version__),
            headers=config.headers,
            timeout_s=config.export_timeout_ms / 1000,
        )
        self._export = SpanExport(
            sender,
            max_queue=config.max_queue,
            max_batch=min(config.max_export_batch, config.max_queue),
            interval_s=config.export_interval_ms / 1000,
            timeout_s=config.export_timeout_ms / 1000,
        )
        self._pipeline = _Pipeline(self._export.add, SpanShapes())

    def begin(self, method: str, headers: HTTPHeaders) -> RequestTrace:
        """A recording trace when the client's parent is sampled, or for a new trace
        at ``sample_ratio``; else a propagation-only one with the sampled flag off."""
        if not self._recording:
            return super().begin(method, headers)
        fields = headers._as_list
        values = fields.get("Traceparent")
        if values is not None:
            parent = parse_traceparent(values)
            if parent is not None:
                state = fields.get("Tracestate")
                tracestate = parse_tracestate(state) if state else None
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
        if self._closed or self._export is None:
            return
        self._closed = True
        await asyncio.to_thread(self._export.shutdown)
