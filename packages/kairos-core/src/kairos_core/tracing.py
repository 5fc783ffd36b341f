"""`TracingConfig`: W3C Trace Context propagation and span export (the ``tracing`` block).

Propagation is on with the block (off without it; ``"tracing": {}`` is enough): every
request gets a trace id (the client's, from a valid ``traceparent``, or a new one)
written to the access log and to problem bodies, and every try upstream carries a
``traceparent`` of its own. Spans are
recorded and exported only with ``exporter: "otlp"``, which needs the OpenTelemetry SDK
(``pip install 'kairos-gateway[otel]'``). The block is read at start-up.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SerializationInfo, field_serializer, field_validator

from ._model import KairosModel

__all__ = ["TracingConfig"]

_REDACTED = "***"


class TracingConfig(KairosModel):
    """Trace propagation to backends, and where recorded spans go."""

    #: Continue the client's trace (or start one) and send ``traceparent`` upstream;
    #: off, the gateway is transparent: trace headers pass as the client sent them.
    propagate: bool = True
    #: ``otlp``: record a server span per request and a client span per try, and send
    #: them as OTLP/HTTP (protobuf) to ``endpoint``; ``none``: record nothing.
    exporter: Literal["none", "otlp"] = "none"
    #: The OTLP/HTTP traces endpoint (a collector's ``/v1/traces``).
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    #: Sent with every export (an API key, a tenant); values are secrets.
    headers: dict[str, str] = Field(default_factory=dict)
    #: Share of new traces recorded; a client's sampled flag is followed (parent-based).
    sample_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    #: The ``service.name`` resource attribute.
    service_name: Annotated[str, Field(min_length=1, max_length=256)] = "kairos-gateway"
    #: Spans are sent in batches: at most this long after they end...
    export_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 1000
    #: ...or once this many are waiting.
    max_export_batch: Annotated[int, Field(ge=1, le=10_000)] = 512
    #: Spans held while the collector is slow or away; beyond, new ones are dropped.
    max_queue: Annotated[int, Field(ge=1, le=1_000_000)] = 2048
    #: Longest wait for one export request.
    export_timeout_ms: Annotated[int, Field(ge=100, le=60_000)] = 10_000

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 10:
            raise ValueError(
                "must be an http:// or https:// URL, e.g. http://collector:4318/v1/traces"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if not name or any(c in name for c in " :\r\n\t") or "\r" in item or "\n" in item:
                raise ValueError(f"{name!r}: not a valid header name and value")
        return value

    @field_serializer("headers")
    def _dump_headers(self, value: dict[str, str], info: SerializationInfo) -> dict[str, str]:
        context = info.context
        if isinstance(context, dict) and context.get("reveal_secrets"):
            return value
        return dict.fromkeys(value, _REDACTED)
