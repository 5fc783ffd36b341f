"""The gateway's own endpoints and its Prometheus metrics."""

from __future__ import annotations

import re

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`."""
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


async def test_health_reports_version_uptime_and_config(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, "/health")
    assert resp.status == 200
    body = resp.json()
    assert body["status"] == "healthy"
    assert body["version"] == "0.1.0"
    # Seconds since start, not since the epoch.
    assert 0 <= body["uptime_s"] < 60
    assert body["config_version"] == 1
    assert body["routes"] == 0


async def test_ready_and_live(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    assert (await raw_request(gw.port, "/ready")).json()["status"] == "ready"
    assert (await raw_request(gw.port, "/live")).json() == {"status": "alive"}
    gw.gateway.ready = False
    not_ready = await raw_request(gw.port, "/ready")
    assert not_ready.status == 503


async def test_ops_endpoints_only_answer_get_and_head(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, "/health", method="POST", body=b"x")
    assert resp.status == 405
    assert resp.header("Allow") == "GET, HEAD"
    head = await raw_request(gw.port, "/health", method="HEAD")
    assert head.status == 200
    assert head.body == b""


async def test_metrics_count_requests_by_route_template(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/users/{id}", "/u/{id}", [backend])]}
    )
    for user in ("1", "2", "3"):
        assert (await raw_request(gw.port, f"/users/{user}")).status == 200
    assert (await raw_request(gw.port, "/missing")).status == 404
    resp = await raw_request(gw.port, "/metrics")
    assert resp.status == 200
    assert (resp.header("Content-Type") or "").startswith("text/plain")
    text = resp.body.decode()

    assert (
        sample(text, "kairos_requests_total", route="/users/{id}", method="GET", status="200") == 3
    )
    # 404s are counted as 404s, under one bounded label, never the raw path.
    assert sample(text, "kairos_requests_total", route="unmatched", status="404") == 1
    assert "/users/1" not in text
    assert "/missing" not in text
    assert sample(text, "kairos_request_duration_seconds_count", route="/users/{id}") == 3
    assert sample(text, "kairos_upstream_request_duration_seconds_count", backend=backend.url) == 3
    assert sample(text, "kairos_response_bytes_total", route="/users/{id}")
    assert sample(text, "kairos_request_bytes_total", route="/users/{id}") == 0
    # The scrape itself is in flight while it renders.
    assert sample(text, "kairos_active_requests") == 1
    assert 'kairos_build_info{python="' in text
    assert 'version="0.1.0"' in text


async def test_upstream_errors_are_counted_by_kind(gateway_factory: GatewayFactory) -> None:
    from tests.support import unused_port

    dead = f"http://127.0.0.1:{unused_port()}"
    gw = await gateway_factory({"version": 1, "routers": [route("/x", "/x", [dead])]})
    assert (await raw_request(gw.port, "/x")).status == 502
    text = (await raw_request(gw.port, "/metrics")).body.decode()
    assert sample(text, "kairos_upstream_errors_total", backend=dead, kind="connect") == 1
    assert sample(text, "kairos_requests_total", route="/x", status="502") == 1
