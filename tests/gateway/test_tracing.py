"""W3C Trace Context propagation: the parsing rules, and what backends, the access log
and problem bodies get (real backends, real sockets; no span export here, see
test_tracing_otel.py)."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
from kairos_core import ConfigError, load_config
from kairos_gateway import AccessLog
from kairos_gateway.tracing import build_tracer
from kairos_gateway.tracing.context import (
    MAX_TRACESTATE,
    TraceParent,
    parse_traceparent,
    parse_tracestate,
)

from tests.conftest import BackendFactory, GatewayFactory, RunningGateway
from tests.support import EchoBackend, raw_request, route

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{SPAN}-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])")
FAST = {"initial_backoff_ms": 1, "max_backoff_ms": 5, "budget_ratio": 1.0}


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A config with a ``tracing`` block (propagation on) unless ``top`` gives one."""
    return {"version": 1, "routers": list(routes), "tracing": {}, **top}


def sent_headers(backend: EchoBackend, index: int = -1) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in backend.requests[index].headers.get_all():
        out.setdefault(name.lower(), []).append(value)
    return out


def upstream_traceparent(backend: EchoBackend, index: int = -1) -> tuple[str, str, str]:
    values = sent_headers(backend, index)["traceparent"]
    assert len(values) == 1
    match = TRACEPARENT.fullmatch(values[0])
    assert match is not None, values[0]
    trace_id, span_id, flags = match.groups()
    return trace_id, span_id, flags


def last_access(gw: RunningGateway) -> dict[str, Any]:
    return json.loads(gw.access_lines()[-1])


# -- the rules (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([PARENT], TraceParent(TRACE, SPAN, True)),
        ([f"00-{TRACE}-{SPAN}-00"], TraceParent(TRACE, SPAN, False)),
        # Only the sampled bit is read; other flags are not passed on.
        ([f"00-{TRACE}-{SPAN}-03"], TraceParent(TRACE, SPAN, True)),
        # A later version may add fields after a dash: the first four are read.
        ([f"01-{TRACE}-{SPAN}-01-whatever"], TraceParent(TRACE, SPAN, True)),
        ([f" {PARENT}\t"], TraceParent(TRACE, SPAN, True)),
        ([], None),
        ([PARENT, PARENT], None),  # several traceparent headers
        ([f"ff-{TRACE}-{SPAN}-01"], None),  # version ff is invalid
        ([f"00-{TRACE}-{SPAN}-01-extra"], None),  # version 00 has exactly four fields
        ([f"01-{TRACE}-{SPAN}-01extra"], None),
        ([f"00-{TRACE.upper()}-{SPAN}-01"], None),  # lower-case hex only
        ([f"00-{TRACE}-{SPAN.upper()}-01"], None),
        ([f"00-{'0' * 32}-{SPAN}-01"], None),  # all-zero trace id
        ([f"00-{TRACE}-{'0' * 16}-01"], None),  # all-zero parent id
        ([f"00-{TRACE[:-1]}-{SPAN}-01"], None),
        ([f"00-{TRACE}-{SPAN}-1"], None),
        ([f"0-{TRACE}-{SPAN}-01"], None),
        ([f"00_{TRACE}_{SPAN}_01"], None),
        (["nonsense"], None),
        ([""], None),
    ],
)
def test_traceparent_rules(values: list[str], expected: TraceParent | None) -> None:
    assert parse_traceparent(values) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["congo=t61rcWkgMzE"], "congo=t61rcWkgMzE"),
        (["rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        (["rojo=1", "congo=2"], "rojo=1,congo=2"),  # several headers are one list
        (["tenant@vendor=x"], "tenant@vendor=x"),
        (["", " , "], None),
        (["Upper=1"], None),  # keys are lower case
        (["novalue"], None),
        (["a=1", "b=x=y"], None),  # no "=" in a value
        ([",".join(f"k{i}=v" for i in range(33))], None),  # over 32 members
    ],
)
def test_tracestate_rules(values: list[str], expected: str | None) -> None:
    assert parse_tracestate(values) == expected


def test_a_long_tracestate_loses_its_long_members_then_its_last_ones() -> None:
    long_member = "big=" + "x" * 200
    small = [f"k{i}=" + "v" * 40 for i in range(20)]  # 20 x 44 chars: over 512 together
    kept = parse_tracestate([",".join([small[0], long_member, *small[1:]])])
    assert kept is not None
    assert len(kept) <= MAX_TRACESTATE
    assert "big=" not in kept
    members = kept.split(",")
    assert members == small[: len(members)]  # the first ones, in order


def test_propagation_is_off_without_a_tracing_block() -> None:
    assert build_tracer(None) is None
    assert build_tracer(load_config(cfg()).tracing) is not None
    assert build_tracer(load_config(cfg(tracing={"propagate": False})).tracing) is None


async def test_without_a_tracing_block_trace_headers_pass_as_sent(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/x", "/x", [backend])]})
    resp = await raw_request(gw.port, "/x", headers=[("traceparent", PARENT)])
    assert resp.status == 200
    assert sent_headers(backend)["traceparent"] == [PARENT]
    missing = await raw_request(gw.port, "/nope")
    assert "trace_id" not in missing.json()


@pytest.mark.parametrize(
    ("tracing", "path"),
    [
        ({"exporter": "zipkin"}, "tracing.exporter"),
        ({"sample_ratio": 1.5}, "tracing.sample_ratio"),
        ({"endpoint": "collector:4318"}, "tracing.endpoint"),
        ({"headers": {"bad name": "x"}}, "tracing.headers"),
        ({"service_name": ""}, "tracing.service_name"),
        ({"propagate": True, "extra": 1}, "tracing.extra"),
    ],
)
def test_tracing_config_errors_name_the_field(tracing: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(cfg(tracing=tracing))
    assert [e.path for e in caught.value.errors] == [path]


def test_export_headers_are_redacted_in_dumps() -> None:
    config = load_config(cfg(tracing={"headers": {"Authorization": "Bearer s3cret"}}))
    assert config.tracing is not None
    assert config.tracing.model_dump()["headers"] == {"Authorization": "***"}
    assert config.tracing.model_dump(context={"reveal_secrets": True})["headers"] == {
        "Authorization": "Bearer s3cret"
    }


# -- through the gateway --------------------------------------------------------------


async def test_a_client_trace_is_continued_with_a_new_span_per_try(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    resp = await raw_request(
        gw.port, "/x", headers=[("traceparent", PARENT), ("tracestate", "rojo=1, congo=2")]
    )
    assert resp.status == 200
    trace_id, span_id, flags = upstream_traceparent(backend)
    assert (trace_id, flags) == (TRACE, "01")
    assert span_id not in (SPAN, "0" * 16)  # the gateway's try, not the client's span
    assert sent_headers(backend)["tracestate"] == ["rojo=1,congo=2"]
    assert last_access(gw)["trace_id"] == TRACE


async def test_an_unsampled_client_trace_stays_unsampled(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    await raw_request(gw.port, "/x", headers=[("traceparent", f"00-{TRACE}-{SPAN}-00")])
    assert upstream_traceparent(backend)[::2] == (TRACE, "00")


async def test_without_a_traceparent_a_new_trace_starts(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    await raw_request(gw.port, "/x")
    await raw_request(gw.port, "/x")
    first, second = upstream_traceparent(backend, 0), upstream_traceparent(backend, 1)
    assert first[0] != second[0]
    assert first[2] == "01"  # nothing decided before the gateway: backends may record
    lines = [json.loads(line) for line in gw.access_lines()]
    assert [line["trace_id"] for line in lines] == [first[0], second[0]]
    assert "tracestate" not in sent_headers(backend)


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"ff-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{SPAN}-01-extra",
        "garbage",
    ],
)
async def test_an_invalid_traceparent_starts_a_new_trace_and_drops_tracestate(
    value: str, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    await raw_request(gw.port, "/x", headers=[("traceparent", value), ("tracestate", "a=1")])
    trace_id, _, _ = upstream_traceparent(backend)
    assert trace_id not in (TRACE, TRACE.upper(), "0" * 32)
    assert "tracestate" not in sent_headers(backend)
    assert last_access(gw)["trace_id"] == trace_id


async def test_two_traceparent_headers_start_a_new_trace(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    other = f"00-{'1' * 32}-{SPAN}-01"
    await raw_request(gw.port, "/x", headers=[("traceparent", PARENT), ("traceparent", other)])
    trace_id, _, _ = upstream_traceparent(backend)
    assert trace_id not in (TRACE, "1" * 32)
    assert len(sent_headers(backend)["traceparent"]) == 1


async def test_every_try_gets_its_own_span_in_the_same_trace(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    failing = await backend_factory("failing")
    good = await backend_factory("good")
    failing.status = 503
    gw = await gateway_factory(cfg(route("/x", "/x", [failing, good], retry_config=FAST)))
    # Round robin: the first request goes to the failing backend first, then is retried.
    resp = await raw_request(gw.port, "/x", headers=[("traceparent", PARENT)])
    assert resp.status == 200
    assert (len(failing.requests), len(good.requests)) == (1, 1)
    first, second = upstream_traceparent(failing), upstream_traceparent(good)
    assert first[0] == second[0] == TRACE
    assert len({first[1], second[1], SPAN}) == 3


async def test_problem_bodies_carry_the_trace_id(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    backend.delay_s = 1
    gw = await gateway_factory(cfg(route("/x", "/x", [backend], timeouts={"read_ms": 50})))
    missing = await raw_request(gw.port, "/nope", headers=[("traceparent", PARENT)])
    assert missing.status == 404
    assert missing.json()["trace_id"] == TRACE
    assert last_access(gw)["trace_id"] == TRACE
    timed_out = await raw_request(gw.port, "/x")
    assert timed_out.status == 504
    body = timed_out.json()
    assert TRACEPARENT.fullmatch(f"00-{body['trace_id']}-{SPAN}-01")
    assert body["trace_id"] == last_access(gw)["trace_id"] != TRACE
    assert upstream_traceparent(backend)[0] == body["trace_id"]


async def test_with_propagation_off_trace_headers_pass_as_sent(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg(route("/x", "/x", [backend]), tracing={"propagate": False}))
    bad = "00-ZZ-not-valid"
    await raw_request(gw.port, "/x", headers=[("traceparent", bad), ("tracestate", "a=1")])
    assert sent_headers(backend)["traceparent"] == [bad]
    assert sent_headers(backend)["tracestate"] == ["a=1"]
    assert last_access(gw)["trace_id"] == ""
    missing = await raw_request(gw.port, "/nope")
    assert "trace_id" not in missing.json()


def test_the_text_access_log_carries_the_trace_id() -> None:
    buffer = io.BytesIO()
    log = AccessLog(buffer, "text")
    common: dict[str, Any] = {
        "request_id": "r1",
        "method": "GET",
        "path": "/x",
        "route": "/x",
        "backend": "",
        "status": 200,
        "duration_s": 0.001,
        "bytes_in": 0,
        "bytes_out": 2,
        "client": "127.0.0.1",
    }
    log.record(**common, trace_id=TRACE)
    log.record(**common)
    log.flush()
    first, second = buffer.getvalue().decode().splitlines()
    assert first.endswith(f" trace_id={TRACE}")
    assert second.endswith(" trace_id=-")


async def test_a_tracing_change_applies_on_restart_and_says_so(
    backend: EchoBackend, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kairos.gateway")
    gw = await gateway_factory(cfg(route("/x", "/x", [backend])))
    gw.gateway.apply(load_config(cfg(route("/x", "/x", [backend]), tracing={"propagate": False})))
    assert any("tracing changed" in r.getMessage() for r in caplog.records)
    await raw_request(gw.port, "/x", headers=[("traceparent", PARENT)])
    trace_id, span_id, _ = upstream_traceparent(backend)
    assert (trace_id, span_id != SPAN) == (TRACE, True)  # still propagating until a restart
