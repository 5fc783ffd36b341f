"""Span export through the OpenTelemetry SDK, received by a real OTLP/HTTP endpoint.

`OtlpReceiver` is a Tornado server on an unused loopback port that accepts
``POST /v1/traces`` the way a collector does and decodes each
``ExportTraceServiceRequest`` with opentelemetry-proto; the tests read the spans the
gateway actually sent over the wire.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kairos_gateway import __version__
from kairos_gateway.tracing import otlp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from tests.conftest import BackendFactory, GatewayFactory
from tests.support import EchoBackend, ResettingServer, eventually, raw_request, route

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")
FAST = {"initial_backoff_ms": 1, "max_backoff_ms": 5, "budget_ratio": 1.0}


@dataclass
class Received:
    span: Span
    resource: dict[str, Any]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP traces endpoint (protobuf), keeping every span it is sent."""

    spans: list[Received] = field(default_factory=list)
    requests: int = 0
    content_types: set[str] = field(default_factory=set)
    #: When set, each export waits for it before being answered (a slow collector).
    gate: asyncio.Event | None = None
    #: Exports that arrived (answered or waiting for the gate).
    arrived: int = 0
    port: int = 0
    _server: HTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def start(self) -> OtlpReceiver:
        receiver = self

        class Traces(web.RequestHandler):
            async def post(self) -> None:
                receiver.arrived += 1
                if receiver.gate is not None:
                    await receiver.gate.wait()
                receiver.requests += 1
                receiver.content_types.add(self.request.headers.get("Content-Type", ""))
                message = ExportTraceServiceRequest()
                message.ParseFromString(self.request.body)
                for resource_spans in message.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            receiver.spans.append(Received(span, resource))
                self.set_header("Content-Type", "application/x-protobuf")
                self.write(ExportTraceServiceResponse().SerializeToString())

        sock, self.port = bind_unused_port()
        self._server = HTTPServer(web.Application([(r"/v1/traces", Traces)]))
        self._server.add_sockets([sock])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()

    def of_trace(self, trace_id: str) -> list[Received]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def server_spans(self) -> list[Received]:
        return [s for s in self.spans if s.span.kind == Span.SPAN_KIND_SERVER]


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    started = await OtlpReceiver().start()
    yield started
    await started.stop()


@pytest.fixture
async def dead() -> AsyncIterator[ResettingServer]:
    server = await ResettingServer().start()
    yield server
    await server.stop()


def cfg(receiver: OtlpReceiver, *routes: dict[str, Any], **tracing: Any) -> dict[str, Any]:
    settings = {"exporter": "otlp", "endpoint": receiver.endpoint, "export_interval_ms": 20}
    return {"version": 1, "routers": list(routes), "tracing": {**settings, **tracing}}


def sent_traceparent(backend: EchoBackend, index: int = -1) -> tuple[str, str, str]:
    values = backend.requests[index].headers.get_list("Traceparent")
    assert len(values) == 1
    match = TRACEPARENT.fullmatch(values[0])
    assert match is not None, values[0]
    trace_id, span_id, flags = match.groups()
    return trace_id, span_id, flags


async def spans_of(receiver: OtlpReceiver, trace_id: str, count: int) -> list[Received]:
    """The spans of ``trace_id`` once ``count`` of them have arrived: server first,
    then the client spans in the order they started."""
    await eventually(lambda: len(receiver.of_trace(trace_id)) >= count)
    spans = receiver.of_trace(trace_id)
    assert len(spans) == count, [s.span.name for s in spans]
    return sorted(
        spans, key=lambda s: (s.span.kind != Span.SPAN_KIND_SERVER, s.span.start_time_unix_nano)
    )


async def test_a_continued_trace_exports_a_server_span_and_a_client_span_per_try(
    backend: EchoBackend, receiver: OtlpReceiver, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(receiver, route("/users/{id}", "/u/{id}", [backend]), service_name="edge-gw")
    )
    resp = await raw_request(
        gw.port,
        "/users/7?full=1",
        headers=[("traceparent", f"00-{TRACE}-{SPAN}-01"), ("User-Agent", "probe/1.0")],
    )
    assert resp.status == 200
    server, client = await spans_of(receiver, TRACE, 2)

    # The server span continues the client's trace, under the client's span.
    assert (server.span.kind, server.parent_id) == (Span.SPAN_KIND_SERVER, SPAN)
    assert server.span.name == "GET /users/{id}"  # the route template
    assert server.attributes == {
        "http.request.method": "GET",
        "url.path": "/users/7",
        "url.scheme": "http",
        "http.route": "/users/{id}",
        "http.response.status_code": 200,
        "server.address": "127.0.0.1",
        "server.port": gw.port,
        "network.peer.address": "127.0.0.1",
        "network.protocol.version": "1.1",
        "user_agent.original": "probe/1.0",
        "kairos.request_id": resp.header("X-Request-Id"),
        "kairos.backend": backend.url,
    }
    assert server.span.status.code == Status.STATUS_CODE_UNSET

    # The client span is the server span's child, and the backend's parent.
    assert (client.span.kind, client.parent_id) == (Span.SPAN_KIND_CLIENT, server.span_id)
    assert client.span.name == "GET"
    assert sent_traceparent(backend) == (TRACE, client.span_id, "01")
    assert client.attributes == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": backend.port,
        "url.full": f"http://127.0.0.1:{backend.port}/u/7",
        "network.peer.address": "127.0.0.1",
        "http.response.status_code": 200,
    }
    assert server.span.start_time_unix_nano <= client.span.start_time_unix_nano
    assert client.span.end_time_unix_nano <= server.span.end_time_unix_nano

    # Resource attributes name the service, its version and this process.
    resource = server.resource
    assert resource["service.name"] == "edge-gw"
    assert resource["service.version"] == __version__
    assert ":" in resource["service.instance.id"]
    assert resource["kairos.worker"] == 0
    assert receiver.content_types == {"application/x-protobuf"}


async def test_retries_are_sibling_client_spans(
    backend_factory: BackendFactory, receiver: OtlpReceiver, gateway_factory: GatewayFactory
) -> None:
    failing = await backend_factory("failing")
    good = await backend_factory("good")
    failing.status = 503
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [failing, good], retry_config=FAST)))
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 200
    trace_id = sent_traceparent(good)[0]
    server, first, second = await spans_of(receiver, trace_id, 3)
    assert first.parent_id == second.parent_id == server.span_id
    assert [first.span_id, second.span_id] == [
        sent_traceparent(failing)[1],
        sent_traceparent(good)[1],
    ]
    assert first.attributes["server.port"] == failing.port
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.span.status.code == Status.STATUS_CODE_ERROR
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["server.port"] == good.port
    assert second.attributes["http.request.resend_count"] == 1
    assert second.span.status.code == Status.STATUS_CODE_UNSET
    assert server.attributes["http.response.status_code"] == 200
    assert first.span.end_time_unix_nano <= second.span.start_time_unix_nano


async def test_errors_are_recorded_on_both_spans(
    receiver: OtlpReceiver, gateway_factory: GatewayFactory, dead: ResettingServer
) -> None:
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [dead])))
    resp = await raw_request(gw.port, "/x")
    assert resp.status == 502
    trace_id = resp.json()["trace_id"]
    server, client = await spans_of(receiver, trace_id, 2)
    assert client.span.status.code == Status.STATUS_CODE_ERROR
    assert client.attributes["error.type"]
    assert [e.name for e in client.span.events] == ["exception"]
    assert server.span.status.code == Status.STATUS_CODE_ERROR
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"] == "upstream_error"


async def test_a_request_no_route_serves_is_a_server_span_named_by_its_method(
    receiver: OtlpReceiver, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [backend])))
    resp = await raw_request(gw.port, "/nope", method="DELETE")
    assert resp.status == 404
    (server,) = await spans_of(receiver, resp.json()["trace_id"], 1)
    assert server.span.name == "DELETE"
    assert "http.route" not in server.attributes
    assert server.attributes["http.response.status_code"] == 404
    assert server.span.status.code == Status.STATUS_CODE_UNSET  # 4xx is not a server error


async def test_a_client_that_leaves_mid_response_still_ends_both_spans(
    backend: EchoBackend,
    receiver: OtlpReceiver,
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await gateway_factory(cfg(receiver, route("/stream", "/stream", [backend])))
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n")
    await reader.readuntil(b"first-chunk;")  # the backend holds the rest back
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: len(receiver.server_spans()) == 1)
    trace_id = receiver.server_spans()[0].trace_id
    server, client = await spans_of(receiver, trace_id, 2)
    assert server.attributes["kairos.client_closed"] is True
    assert "http.response.status_code" not in server.attributes
    assert client.attributes["http.response.status_code"] == 200
    assert client.parent_id == server.span_id
    assert not [r for r in caplog.records if "already ended" in r.getMessage()]


async def test_sampling_follows_the_ratio_and_a_sampled_parent(
    backend: EchoBackend, receiver: OtlpReceiver, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [backend]), sample_ratio=0))
    # Ratio 0: new traces are not recorded, and the backend is told so.
    for _ in range(5):
        assert (await raw_request(gw.port, "/x")).status == 200
    assert {sent_traceparent(backend, i)[2] for i in range(5)} == {"00"}
    # An unsampled parent stays unsampled.
    unsampled = "1" * 32
    await raw_request(gw.port, "/x", headers=[("traceparent", f"00-{unsampled}-{SPAN}-00")])
    assert sent_traceparent(backend) == (unsampled, sent_traceparent(backend)[1], "00")
    # A sampled parent is honoured whatever the ratio.
    await raw_request(gw.port, "/x", headers=[("traceparent", f"00-{TRACE}-{SPAN}-01")])
    assert sent_traceparent(backend)[::2] == (TRACE, "01")
    server, _client = await spans_of(receiver, TRACE, 2)
    assert server.parent_id == SPAN
    # Spans go out in the order they end: nothing else was recorded before these two.
    assert len(receiver.spans) == 2


async def test_a_ratio_keeps_about_that_share_of_new_traces(
    backend: EchoBackend, receiver: OtlpReceiver, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [backend]), sample_ratio=0.5))
    for _ in range(60):
        await raw_request(gw.port, "/x")
    sampled = {
        sent_traceparent(backend, i)[0]
        for i in range(60)
        if sent_traceparent(backend, i)[2] == "01"
    }
    assert 10 <= len(sampled) <= 50  # binomial(60, 0.5): far outside is a broken sampler
    await eventually(lambda: {s.trace_id for s in receiver.server_spans()} == sampled)


async def test_stopping_the_gateway_sends_the_spans_still_queued(
    backend: EchoBackend, receiver: OtlpReceiver, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(receiver, route("/x", "/x", [backend]), export_interval_ms=60_000)
    )
    for _ in range(3):
        assert (await raw_request(gw.port, "/x")).status == 200
    assert receiver.spans == []  # a minute to the next scheduled export
    await gw.gateway.stop()
    assert len(receiver.spans) == 6
    assert len(receiver.server_spans()) == 3


async def test_with_the_sdk_disabled_by_its_variable_the_gateway_only_propagates(
    backend: EchoBackend,
    receiver: OtlpReceiver,
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [backend])))
    await raw_request(gw.port, "/x", headers=[("traceparent", f"00-{TRACE}-{SPAN}-01")])
    assert sent_traceparent(backend)[::2] == (TRACE, "01")
    assert sent_traceparent(backend)[1] != SPAN
    await raw_request(gw.port, "/x")
    assert sent_traceparent(backend)[0] not in (TRACE, "0" * 32)
    await gw.gateway.stop()  # would send anything queued
    assert receiver.requests == 0


async def test_a_stuck_collector_costs_spans_beyond_the_queue_not_requests(
    backend: EchoBackend,
    receiver: OtlpReceiver,
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kairos.gateway")
    receiver.gate = asyncio.Event()
    gw = await gateway_factory(
        cfg(
            receiver,
            route("/x", "/x", [backend]),
            max_queue=2,
            max_export_batch=2,
            export_interval_ms=60_000,
        )
    )
    # The first request's two spans fill a batch: the export thread sends them and
    # waits on the collector; the second request's spans fill the queue; the other
    # eight requests' spans are dropped, and the requests do not wait.
    assert (await raw_request(gw.port, "/x")).status == 200
    await eventually(lambda: receiver.arrived == 1)
    for _ in range(9):
        assert (await raw_request(gw.port, "/x")).status == 200
    receiver.gate.set()
    await eventually(lambda: len(receiver.spans) == 4)

    def dropped() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "span queue full; spans dropped"]

    await eventually(dropped)
    (record,) = dropped()
    assert record.fields == {"spans": 16, "max_queue": 2}  # type: ignore[attr-defined]
    await gw.gateway.stop()
    assert len(receiver.spans) == 4
    assert len(receiver.server_spans()) == 2


async def test_a_failing_export_is_logged_once_and_requests_go_on(
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
    dead: ResettingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kairos.gateway")
    config = {
        "version": 1,
        "routers": [route("/x", "/x", [backend])],
        "tracing": {"exporter": "otlp", "endpoint": f"{dead.url}/v1/traces", "max_export_batch": 2},
    }
    gw = await gateway_factory(config)
    for _ in range(3):
        assert (await raw_request(gw.port, "/x")).status == 200
    await eventually(lambda: dead.accepted >= 3)  # one export per request's two spans

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "span export failed; spans dropped"]

    assert len(failures()) == 1  # the first of a streak; then once a minute
    assert failures()[0].fields["endpoint"] == f"{dead.url}/v1/traces"  # type: ignore[attr-defined]


async def test_the_sdk_resource_variables_add_attributes_under_the_gateway_own(
    backend: EchoBackend,
    receiver: OtlpReceiver,
    gateway_factory: GatewayFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,kairos.worker=9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    gw = await gateway_factory(cfg(receiver, route("/x", "/x", [backend]), service_name="edge"))
    await raw_request(gw.port, "/x", headers=[("traceparent", f"00-{TRACE}-{SPAN}-01")])
    server, _client = await spans_of(receiver, TRACE, 2)
    assert server.resource["deployment.environment"] == "staging"
    assert server.resource["telemetry.sdk.language"] == "python"
    # The configuration's values win over the variables'.
    assert (server.resource["service.name"], server.resource["kairos.worker"]) == ("edge", 0)


def test_the_encoding_is_what_opentelemetry_proto_reads() -> None:
    resource = {"service.name": "gw", "kairos.worker": 3}
    typed = {"s": "ünïcode", "i": 7, "neg": -2, "big": 2**62, "b": True, "f": 0.25}
    # String values written one by one, either side of 127 bytes of KeyValue (the
    # largest whose lengths all fit one byte, with a key of 4 characters).
    strings = {"short": "/ü", "edge": "y" * 117, "over": "z" * 118, "long": "é" * 300}
    span = otlp.span(
        bytes.fromhex(TRACE),
        bytes.fromhex("1122334455667788"),
        bytes.fromhex(SPAN),
        True,
        otlp.name_kind("GET /users/{id}", otlp.CLIENT),
        1_700_000_000_000_000_000,
        1_700_000_000_123_456_789,
        otlp.attributes({**typed, "kairos.worker": 3})
        + b"".join(otlp.string_attribute(otlp.key(k), v) for k, v in strings.items())
        + otlp.event("exception", 1_700_000_000_000_000_001, {"exception.message": "boom", "i": 7})
        + otlp.status(True, "connect"),
    )
    scope = otlp.scope("kairos-gateway", "9.9")
    resource_bytes = otlp.attributes(resource, otlp.RESOURCE_ATTRIBUTE)
    request = ExportTraceServiceRequest()
    request.ParseFromString(otlp.export_request([span, span], resource_bytes, scope))
    (resource_spans,) = request.resource_spans
    assert attributes(resource_spans.resource.attributes) == resource
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("kairos-gateway", "9.9")
    decoded = scope_spans.spans
    assert len(decoded) == 2
    got = decoded[0]
    assert (got.trace_id.hex(), got.span_id.hex(), got.parent_span_id.hex()) == (
        TRACE,
        "1122334455667788",
        SPAN,
    )
    assert (got.name, got.kind) == ("GET /users/{id}", Span.SPAN_KIND_CLIENT)
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (
        1_700_000_000_000_000_000,
        1_700_000_000_123_456_789,
    )
    assert attributes(got.attributes) == {
        "s": "ünïcode",
        "i": 7,
        "neg": -2,
        "big": 2**62,
        "b": True,
        "f": 0.25,
        "kairos.worker": 3,  # as in the resource: each kept in its own place
        **strings,
    }
    assert attributes(decoded[1].attributes) == attributes(got.attributes)
    (event,) = got.events
    assert (event.name, event.time_unix_nano) == ("exception", 1_700_000_000_000_000_001)
    assert attributes(event.attributes) == {"exception.message": "boom", "i": 7}
    assert (got.status.code, got.status.message) == (Status.STATUS_CODE_ERROR, "connect")
    assert got.flags == 0x301  # sampled, parent known to be remote
