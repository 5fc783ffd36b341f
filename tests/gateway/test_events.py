"""`GET /api/events`: live events over Server-Sent Events, against real gateways and
backends: config changes (API, file watcher, failed and recovered reloads), backends
going down (active health check, breaker, outlier ejection), roles and secrets,
Last-Event-ID, the subscriber limit, and streams ending on shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kairos_gateway.events import EventBus

from tests.conftest import BackendFactory, GatewayFactory, RunningGateway
from tests.redis_server import RedisServer
from tests.support import EchoBackend, ResettingServer, api_call, eventually, raw_request, route

ADMIN = "admin-token-0123456789"
VIEWER = "viewer-token-0123456789"
JWT_SECRET = "jwt-secret-never-shown-0123456789"
NEW_SECRET = "a-brand-new-jwt-secret-0123456789-abcdef"


@dataclass
class Message:
    id: str
    type: str
    data: dict[str, Any]


class EventReader:
    """An open event stream: `next` reads one message, `wait_for` skips to a type."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        #: Every line read, comments included (to look for secrets).
        self.raw: list[str] = []

    async def next(self, timeout: float = 3.0) -> Message | None:
        """The next message, or None when the stream ended."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                line = await self.response.content.readline()
                if not line:
                    return None
                text = line.decode().rstrip("\n")
                self.raw.append(text)
                if text == "":
                    if "event" in fields:
                        return Message(fields["id"], fields["event"], json.loads(fields["data"]))
                    fields = {}
                    continue
                if text.startswith(":"):
                    continue
                name, _, value = text.partition(": ")
                fields[name] = value

    async def wait_for(self, type_: str, timeout: float = 3.0) -> Message:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                assert message is not None, f"the stream ended before a {type_} event"
                if message.type == type_:
                    return message


@asynccontextmanager
async def subscribe(
    gw: RunningGateway, headers: dict[str, str] | None = None
) -> AsyncIterator[EventReader]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{gw.url}/api/events", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        yield EventReader(response)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- configuration ---------------------------------------------------------------------


async def test_a_route_added_through_the_api_arrives_within_a_second(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    async with subscribe(gw) as events:
        started = time.monotonic()
        created = await api_call(gw.port, "POST", "/api/routes", route("/b", "/b", [backend]))
        assert created.status == 201
        message = await events.wait_for("config.applied", timeout=1)
        assert time.monotonic() - started < 1
    data = message.data
    assert data["actor"] == "loopback"
    assert data["trigger"] == "api"
    assert data["changes"] == [{"route": "DELETE,GET,HEAD,POST,PUT /b", "change": "added"}]
    assert f'"{data["version"]}"' == created.header("ETag")
    assert data["config_version"] == gw.gateway.runtime.snapshot.generation
    assert message.id.startswith(gw.gateway.events.stream + "-")


async def test_a_file_edit_seen_by_the_watcher_arrives_within_a_second(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = {"version": 1, "routers": [route("/a", "/a", [backend])]}
    gw = await file_gateway_factory(config)
    watcher = gw.gateway.management.watcher
    assert watcher is not None
    await asyncio.wait_for(watcher.watching.wait(), 5)
    async with subscribe(gw) as events:
        started = time.monotonic()
        config["routers"].append(route("/b", "/b", [backend]))
        (tmp_path / "config.json").write_text(json.dumps(config))
        message = await events.wait_for("config.applied", timeout=1)
        elapsed = time.monotonic() - started
    assert elapsed < 1, elapsed
    assert (message.data["actor"], message.data["trigger"]) == ("file", "watcher")
    assert [c["change"] for c in message.data["changes"]] == ["added"]


async def test_a_failed_reload_and_the_recovery_are_events(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    config = {"version": 1, "hot_reload": False, "routers": [route("/a", "/a", [backend])]}
    gw = await file_gateway_factory(config)
    path = tmp_path / "config.json"
    async with subscribe(gw) as events:
        path.write_text(json.dumps({**config, "routers": [{"external_path": "/a"}]}))
        assert (await api_call(gw.port, "POST", "/api/config/reload")).status == 422
        failed = await events.wait_for("config.reload_failed")
        assert failed.data["trigger"] == "api"
        assert "routers[0].internal_path" in [e["path"] for e in failed.data["errors"]]
        path.write_text(json.dumps(config))
        assert (await api_call(gw.port, "POST", "/api/config/reload")).status == 200
        recovered = await events.wait_for("config.reload_recovered")
    assert recovered.data == {
        "at": recovered.data["at"],
        "trigger": "api",
        "failed_trigger": "api",
    }


async def test_a_change_made_on_another_node_arrives_within_a_second(
    redis_server: RedisServer, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    cluster = {"redis_url": redis_server.url}
    seed = {"version": 1, "routers": [route("/a", "/a", [backend])], "cluster": cluster}
    a = await gateway_factory(seed)
    b = await gateway_factory(seed)
    async with subscribe(b) as events:
        started = time.monotonic()
        created = await api_call(a.port, "POST", "/api/routes", route("/b", "/b", [backend]))
        assert created.status == 201
        message = await events.wait_for("config.applied", timeout=1)
        assert time.monotonic() - started < 1
    assert (message.data["actor"], message.data["trigger"]) == ("cluster", "cluster")
    assert f'"{message.data["version"]}"' == created.header("ETag")


# -- backends --------------------------------------------------------------------------


async def test_a_backend_failing_its_health_check_is_an_event_within_detection_time(
    backend_factory: BackendFactory, gateway_factory: GatewayFactory
) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    health = {"interval_s": 0.1, "timeout_s": 0.1, "unhealthy_threshold": 2}
    gw = await gateway_factory(
        {
            "version": 1,
            "health_check": health,
            "routers": [route("/x", "/x", [a, b], backend_extra={"health_check_path": "/health"})],
        }
    )
    async with subscribe(gw) as events:
        started = time.monotonic()
        a.health_status = 500
        message = await events.wait_for("backend.health", timeout=2)
        # Detection takes two failed probes 0.1 s apart (0.3 s at most with the probe
        # in progress); the rest is slack for a busy machine.
        assert time.monotonic() - started < 1
        assert message.data["backend"] == a.url
        assert (message.data["healthy"], message.data["available"]) == (False, False)
        assert message.data["error"] == "status 500"
        a.health_status = 200
        back = await events.wait_for("backend.health", timeout=2)
    assert (back.data["backend"], back.data["healthy"], back.data["error"]) == (a.url, True, None)


async def test_breaker_transitions_and_ejections_are_events(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    dead = await ResettingServer().start()
    try:
        gw = await gateway_factory(
            {
                "version": 1,
                "circuit_breaker": {"failure_threshold": 2, "reset_timeout_s": 30},
                "outlier_detection": {"consecutive_failures": 1, "base_ejection_s": 0.3},
                "routers": [
                    route("/x", "/x", [dead, backend], load_balancing_strategy="round_robin")
                ],
            }
        )
        async with subscribe(gw) as events:
            # The first failure ejects the dead backend (outlier detection)...
            while dead.accepted == 0:
                await raw_request(gw.port, "/x")
            ejected = await events.wait_for("backend.ejection")
            assert ejected.data["backend"] == dead.url
            assert (ejected.data["ejected"], ejected.data["reason"]) == (True, "reset")
            assert ejected.data["available"] is False
            # ... and its end, a comparison with the clock, is seen by the 1 s tick.
            ended = await events.wait_for("backend.ejection", timeout=2)
            assert (ended.data["backend"], ended.data["ejected"]) == (dead.url, False)
            # A second failure in a row opens its breaker.
            while dead.accepted < 2:
                await raw_request(gw.port, "/x")
            opened = await events.wait_for("backend.breaker")
        assert opened.data["backend"] == dead.url
        assert (opened.data["from"], opened.data["to"]) == ("closed", "open")
        assert opened.data["available"] is False
    finally:
        await dead.stop()


# -- the metrics tick ------------------------------------------------------------------


async def test_the_metrics_tick_runs_only_while_someone_subscribes(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    assert (await raw_request(gw.port, "/a")).status == 200
    bus = gw.gateway.events
    assert not bus.watched.is_set()
    async with subscribe(gw) as events:
        tick = await events.wait_for("metrics", timeout=2)
        assert bus.subscribers == 1
        assert tick.data["totals"]["requests"] == 1
        # The open stream is not a request in progress.
        assert tick.data["active_requests"] == 0
        assert "routes" not in tick.data
    await eventually(lambda: bus.subscribers == 0)
    assert not bus.watched.is_set()


async def test_an_idle_stream_carries_keep_alive_comments(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    gw.gateway.management.heartbeat_s = 0.05
    async with subscribe(gw) as events:
        # The first tick comes at once, the next a second later: comments in between.
        await events.wait_for("metrics", timeout=2)
        await events.wait_for("metrics", timeout=2)
        assert events.raw[:2] == ["retry: 2000", ": kairos events"]
        assert ": keep-alive" in events.raw


# -- access and secrets ----------------------------------------------------------------


async def test_viewers_may_subscribe_callers_without_a_token_may_not_and_no_secret_shows(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {
            "version": 1,
            "jwt_secret": JWT_SECRET,
            "routers": [route("/a", "/a", [backend])],
            "admin": {
                "token": ADMIN,
                "tokens": [{"name": "dashboards", "token": VIEWER, "role": "viewer"}],
            },
        }
    )
    refused = await raw_request(gw.port, "/api/events")
    assert refused.status == 401
    assert (refused.header("WWW-Authenticate") or "").startswith("Bearer")
    wrong = await raw_request(gw.port, "/api/events", headers=[("Authorization", "Bearer nope")])
    assert wrong.status == 401
    head = await raw_request(
        gw.port, "/api/events", method="HEAD", headers=[("Authorization", f"Bearer {VIEWER}")]
    )
    assert head.status == 200
    assert (head.header("Content-Type") or "").startswith("text/event-stream")
    async with subscribe(gw, bearer(VIEWER)) as events:
        # The viewer cannot change anything (403)...
        denied = await api_call(
            gw.port,
            "POST",
            "/api/routes",
            route("/b", "/b", [backend]),
            headers=[("Authorization", f"Bearer {VIEWER}")],
        )
        assert denied.status == 403
        # ... but sees the admin's change, including a new secret, without the secret.
        as_admin = [("Authorization", f"Bearer {ADMIN}")]
        config = (await api_call(gw.port, "GET", "/api/config", headers=as_admin)).json()
        # A new secret (versions hash the redacted configuration, so a secret alone
        # changes no version) with a route.
        config["jwt_secret"] = NEW_SECRET
        config["routers"].append(route("/c", "/c", [backend]))
        changed = await api_call(
            gw.port, "PUT", "/api/config", config, headers=[("Authorization", f"Bearer {ADMIN}")]
        )
        assert changed.status == 200, changed.body
        message = await events.wait_for("config.applied")
        await events.wait_for("metrics", timeout=2)
    assert message.data["actor"] == "admin"
    assert message.data["changes"] == [{"route": "DELETE,GET,HEAD,POST,PUT /c", "change": "added"}]
    text = "\n".join(events.raw)
    for secret in (JWT_SECRET, NEW_SECRET, ADMIN, VIEWER):
        assert secret not in text


async def test_beyond_the_subscriber_limit_a_503_problem(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    gw.gateway.events.max_subscribers = 1
    async with subscribe(gw):
        refused = await raw_request(gw.port, "/api/events")
        assert refused.status == 503
        assert refused.header("Content-Type") == "application/problem+json"
        assert refused.header("Retry-After") == "5"
        assert refused.json()["type"] == "too_many_subscribers"
    await eventually(lambda: gw.gateway.events.subscribers == 0)
    async with subscribe(gw) as events:  # the slot is free again
        await events.wait_for("metrics", timeout=2)


# -- resuming --------------------------------------------------------------------------


async def test_last_event_id_replays_what_was_missed_and_a_foreign_one_resets(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    async with subscribe(gw) as events:
        await api_call(gw.port, "POST", "/api/routes", route("/b", "/b", [backend]))
        seen = await events.wait_for("config.applied")
    # Missed while away: two changes.
    await api_call(gw.port, "POST", "/api/routes", route("/c", "/c", [backend]))
    await api_call(gw.port, "DELETE", "/api/routes/%2Fb")
    async with subscribe(gw, {"Last-Event-ID": seen.id}) as events:
        first = await events.next()
        second = await events.next()
    assert first is not None
    assert second is not None
    assert [first.data["changes"][0]["change"], second.data["changes"][0]["change"]] == [
        "added",
        "removed",
    ]
    async with subscribe(gw, {"Last-Event-ID": "0badc0de-3"}) as events:
        reset = await events.next()
    assert reset is not None
    assert reset.type == "reset"


async def test_a_subscriber_that_falls_behind_gets_lagged_and_its_stream_ends() -> None:
    bus = EventBus(queue_size=3, replay_size=10)
    slow = bus.subscribe()
    for n in range(5):
        bus.publish("config.applied", {"n": n})
    lagged = await slow.next(1)
    assert lagged is not None
    assert lagged.type == "lagged"
    with pytest.raises(EOFError):
        await slow.next(1)
    # Reconnecting from the last event read replays what the ring still has.
    again = bus.subscribe(lagged.id.rsplit("-", 1)[0] + "-2")
    replayed = [await again.next(1) for _ in range(3)]
    assert [e.data["n"] for e in replayed if e is not None] == [2, 3, 4]


# -- shutdown --------------------------------------------------------------------------


async def test_streams_end_at_once_when_the_gateway_stops(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    async with subscribe(gw) as events, subscribe(gw) as other:
        await events.wait_for("metrics", timeout=2)
        started = time.monotonic()
        await gw.gateway.stop(drain_timeout_s=5)
        assert time.monotonic() - started < 1  # not held up by the open streams
        assert await events.next() is None or await events.next() is None
        assert await other.next() is None or await other.next() is None
    assert gw.gateway.inflight == 0
    assert gw.gateway.runtime.metrics.active_requests == 0
