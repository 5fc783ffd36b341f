"""Plugins end to end: a real gateway, a real backend, and the example plugins found
through their real entry points (examples/plugins, installed by ``uv sync``).

Plugins only a test needs (one that raises, blocks, answers early or records its
instance) are given to the gateway with ``PluginRegistry(extra=...)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kairos_core import ConfigError
from kairos_gateway import (
    Plugin,
    PluginRegistry,
    Policy,
    Request,
    Response,
    ResponseHead,
    UpstreamRequest,
)
from pydantic import BaseModel, ConfigDict

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, RawResponse, api_call, clean_env, raw_request, route

KEY = "k3y-for-the-tests-0001"
OTHER_KEY = "another-key-for-tests-0002"
#: A third key, configured by its digest only.
DIGEST_ONLY_KEY = "digest-only-key-for-tests-03"
DIGEST = "sha256:" + hashlib.sha256(DIGEST_ONLY_KEY.encode()).hexdigest()
PROBLEM = "application/problem+json"


def cfg(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **top}


def api_key(**config: Any) -> dict[str, Any]:
    return {"name": "api-key", "config": {"keys": [KEY, DIGEST], **config}}


def headers_of(resp: RawResponse) -> dict[str, list[str]]:
    """The headers the backend received (lower-cased names), from its echo."""
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def logged(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    """The structured ``fields`` of each ``kairos.gateway`` record with ``message``."""
    return [
        getattr(r, "fields", {})
        for r in caplog.records
        if r.name == "kairos.gateway" and r.getMessage() == message
    ]


# -- plugins only the tests install ------------------------------------------------------


class NoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = ""


#: Every `Recorder` built, kept alive so that no two of them can share an id().
RECORDERS: list[Recorder] = []


class Recorder(Policy):
    """Tells the backend which instance, with which settings, handled the request."""

    def __init__(self, settings: TagConfig) -> None:
        self.tag = settings.tag
        RECORDERS.append(self)

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        upstream.headers.append(("X-Recorder", f"{id(self)} {self.tag}"))


class Broken(Policy):
    def __init__(self, settings: NoConfig) -> None:
        pass

    def on_request(self, request: Request) -> None:
        raise RuntimeError("a bug in the plugin")


class Sleepy(Policy):
    """Blocks the event loop in a plain hook."""

    def __init__(self, settings: NoConfig) -> None:
        pass

    def on_request(self, request: Request) -> None:
        time.sleep(0.1)


class SleepyAfterAwait(Policy):
    """A coroutine that blocks the loop in its second step, after a suspension."""

    def __init__(self, settings: NoConfig) -> None:
        pass

    async def on_request(self, request: Request) -> None:
        await asyncio.sleep(0)
        time.sleep(0.1)


class Teapot(Policy):
    """Answers every request itself."""

    def __init__(self, settings: NoConfig) -> None:
        pass

    def on_request(self, request: Request) -> Response:
        return Response.json(418, {"short": "stout"}, [("X-Teapot", request.request_id)])


class BrokenOnResponse(Policy):
    def __init__(self, settings: NoConfig) -> None:
        self.calls = 0

    def on_response(self, request: Request, head: ResponseHead) -> None:
        self.calls += 1
        raise RuntimeError("a bug in the response hook")


class HeadRecorder(Policy):
    """Tells the client what its ``on_response`` hook saw of the response head."""

    def __init__(self, settings: NoConfig) -> None:
        pass

    def on_response(self, request: Request, head: ResponseHead) -> None:
        names = sorted({name.lower() for name, _ in head.headers})
        head.headers.append(("X-Seen", ",".join(names)))


RECORDER = Plugin(name="recorder", config=TagConfig, policy=Recorder)
BROKEN_ON_RESPONSE = Plugin(name="broken-on-response", config=NoConfig, policy=BrokenOnResponse)
HEAD_RECORDER = Plugin(name="head-recorder", config=NoConfig, policy=HeadRecorder)
BROKEN = Plugin(name="broken", config=NoConfig, policy=Broken)
SLEEPY = Plugin(name="sleepy", config=NoConfig, policy=Sleepy)
SLEEPY_ASYNC = Plugin(name="sleepy-async", config=NoConfig, policy=SleepyAfterAwait)
TEAPOT = Plugin(name="teapot", config=NoConfig, policy=Teapot)

# -- api-key -------------------------------------------------------------------------------


async def test_api_key_for_every_route(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(route("/a", "/a", [backend]), route("/b", "/b", [backend]), plugins=[api_key()])
    )
    missing = await raw_request(gw.port, "/a")
    assert missing.status == 401
    assert missing.header("Content-Type") == PROBLEM
    problem = missing.json()
    assert problem["type"] == "unauthorized"
    assert problem["request_id"] == missing.header("X-Request-Id")
    assert "X-Api-Key" in problem["detail"]
    assert missing.header("WWW-Authenticate") == 'ApiKey realm="kairos", header="X-Api-Key"'
    wrong = await raw_request(gw.port, "/b", headers=[("X-Api-Key", KEY + "x")])
    assert wrong.status == 401
    assert wrong.json()["detail"] == "the API key is not valid"
    twice = await raw_request(gw.port, "/b", headers=[("X-Api-Key", KEY), ("X-Api-Key", KEY)])
    assert twice.status == 401
    assert backend.requests == []

    for key in (KEY, DIGEST_ONLY_KEY):  # given in clear, and by its digest
        ok = await raw_request(gw.port, "/b", headers=[("X-Api-Key", key)])
        assert ok.status == 200, ok.body
        assert "x-api-key" not in headers_of(ok)  # stripped before the backend
    assert len(backend.requests) == 2


async def test_api_key_from_an_environment_variable(
    backend: EchoBackend, gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PLUGIN_KEYS", f"{OTHER_KEY}, {DIGEST}")
    entry = {"name": "api-key", "config": {"keys_env": "TEST_PLUGIN_KEYS", "strip": False}}
    gw = await gateway_factory(cfg(route("/a", "/a", [backend]), plugins=[entry]))
    for key in (OTHER_KEY, DIGEST_ONLY_KEY):
        ok = await raw_request(gw.port, "/a", headers=[("X-Api-Key", key)])
        assert ok.status == 200
        assert headers_of(ok)["x-api-key"] == [key]  # strip: false
    assert (await raw_request(gw.port, "/a", headers=[("X-Api-Key", KEY)])).status == 401


async def test_a_route_entry_turns_the_plugin_off_or_replaces_its_settings(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    off = {"name": "api-key", "enabled": False}  # turning it off needs no settings
    replaced = {
        "name": "api-key",
        "config": {"header": "X-Partner-Key", "keys": [OTHER_KEY], "strip": False},
    }
    gw = await gateway_factory(
        cfg(
            route("/guarded", "/guarded", [backend]),
            route("/open", "/open", [backend], plugins=[off]),
            route("/partner", "/partner", [backend], plugins=[replaced]),
            plugins=[api_key()],
        )
    )
    assert (await raw_request(gw.port, "/guarded")).status == 401
    assert (await raw_request(gw.port, "/open")).status == 200

    partner = [("X-Partner-Key", OTHER_KEY)]
    assert (await raw_request(gw.port, "/partner", headers=[("X-Api-Key", KEY)])).status == 401
    ok = await raw_request(gw.port, "/partner", headers=partner)
    assert ok.status == 200
    assert headers_of(ok)["x-partner-key"] == [OTHER_KEY]
    assert (await raw_request(gw.port, "/guarded", headers=partner)).status == 401


async def test_turning_off_a_plugin_that_is_not_installed_is_an_error(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    off = {"name": "api-kee", "enabled": False}
    with pytest.raises(ConfigError) as info:
        await gateway_factory(cfg(route("/open", "/open", [backend], plugins=[off])))
    (error,) = info.value.errors
    assert error.path == "routers[0].plugins[0].name"
    assert "did you mean 'api-key'" in error.message


# -- add-headers ---------------------------------------------------------------------------


async def test_add_headers_edits_the_request_and_the_response(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    entry = {
        "name": "add-headers",
        "config": {
            "request": {
                "set": {"X-Trace": "id={request_id} ip={client_ip} route={route} {{x}}"},
                "add": {"X-Tenant": "blue"},
                "remove": ["X-Internal"],
            },
            "response": {"set": {"X-Served-By": "kairos {request_id}"}, "remove": ["X-Backend"]},
        },
    }
    gw = await gateway_factory(cfg(route("/users/{id}", "/u/{id}", [backend]), plugins=[entry]))
    resp = await raw_request(
        gw.port,
        "/users/7",
        headers=[
            ("X-Request-Id", "req-42"),
            ("X-Trace", "from the client"),
            ("X-Tenant", "red"),
            ("X-Internal", "secret"),
        ],
    )
    assert resp.status == 200
    seen = headers_of(resp)
    assert seen["x-trace"] == ["id=req-42 ip=127.0.0.1 route=/users/{id} {x}"]
    assert seen["x-tenant"] == ["red", "blue"]  # add keeps the client's
    assert "x-internal" not in seen
    assert resp.header("X-Served-By") == "kairos req-42"
    assert resp.header("X-Backend") is None


async def test_response_edits_apply_to_the_gateways_own_answers(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    stamp = {"name": "add-headers", "config": {"response": {"set": {"X-Served-By": "kairos"}}}}
    gw = await gateway_factory(cfg(route("/a", "/a", [backend]), plugins=[api_key(), stamp]))
    refused = await raw_request(gw.port, "/a")
    assert refused.status == 401
    assert refused.header("X-Served-By") == "kairos"


async def test_priority_orders_plugins_and_the_config_can_override_it(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    # Both act in before_upstream: api-key (1500) strips X-Api-Key, add-headers (800)
    # sets it. Higher runs first, so by default the set header survives the strip.
    setter: dict[str, Any] = {
        "name": "add-headers",
        "config": {"request": {"set": {"X-Api-Key": "set by add-headers"}}},
    }
    first_setter = {**setter, "priority": 2000}
    gw = await gateway_factory(
        cfg(
            route("/default", "/default", [backend]),
            route("/flipped", "/flipped", [backend], plugins=[first_setter]),
            plugins=[api_key(), setter],
        )
    )
    key = [("X-Api-Key", KEY)]
    default = await raw_request(gw.port, "/default", headers=key)
    assert headers_of(default)["x-api-key"] == ["set by add-headers"]
    flipped = await raw_request(gw.port, "/flipped", headers=key)
    assert flipped.status == 200
    assert "x-api-key" not in headers_of(flipped)


# -- configuration errors ------------------------------------------------------------------


async def _check(tmp_path: Path, config: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_gateway",
        "--check",
        "--config",
        str(path),
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_check_reports_plugin_errors_with_field_paths(tmp_path: Path) -> None:
    bad = cfg(
        route(
            "/a",
            "/a",
            ["http://127.0.0.1:9"],
            plugins=[
                {"name": "add-hedaers", "config": {}},
                {"name": "api-key", "config": {"keys": [KEY], "header": "X Api Key"}},
            ],
        ),
        plugins=[{"name": "api-key", "config": {"keys": ["too-short"]}}],
    )
    code, output = await _check(tmp_path, bad)
    assert code == 1
    assert "Traceback" not in output
    assert "plugins[0].config.keys[0]: " in output
    assert "at least 16 characters" in output
    assert "routers[0].plugins[0].name: " in output
    assert "did you mean 'add-headers'?" in output
    assert "routers[0].plugins[1].config.header: " in output


async def test_management_api_refuses_bad_plugin_settings(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(cfg(route("/a", "/a", [backend]), plugins=[api_key()]))
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    on_disk = source.read_text()

    bad = cfg(route("/a", "/a", [backend]), plugins=[{"name": "api-key", "config": {}}])
    resp = await api_call(gw.port, "PUT", "/api/config", bad)
    assert resp.status == 422, resp.body
    assert [e["path"] for e in resp.json()["errors"]] == ["plugins[0].config.keys"]

    unknown = {"name": "add-headers", "config": {"request": {"set": {"X-Trace": "{trace_id}"}}}}
    new_route = route("/b", "/b", [backend], plugins=[unknown])
    resp = await api_call(gw.port, "POST", "/api/routes", new_route)
    assert resp.status == 422, resp.body
    errors = resp.json()["errors"]
    assert [e["path"] for e in errors] == ["routers[1].plugins[0].config.request.set.X-Trace"]
    assert "unknown placeholder {trace_id}" in errors[0]["message"]

    # Nothing changed: the key is still required, and the file is as it was.
    assert (await raw_request(gw.port, "/a")).status == 401
    assert (await raw_request(gw.port, "/b")).status == 404
    assert source.read_text() == on_disk


async def test_plugins_endpoint_lists_builtins_and_installed_plugins(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(cfg())
    resp = await api_call(gw.port, "GET", "/api/plugins")
    assert resp.status == 200
    body = resp.json()
    assert body["errors"] == {}
    by_name = {p["name"]: p for p in body["plugins"]}
    builtins = {"security_headers": 2100, "cors": 2000, "body_limit": 1900, "jwt": 1450}
    builtins |= {"client_cert": 1600, "rate_limit": 910}
    for name, priority in builtins.items():
        assert by_name[name]["builtin"] is True
        assert by_name[name]["priority"] == priority
    key = by_name["api-key"]
    assert key["builtin"] is False
    assert (key["priority"], key["phases"]) == (1500, ["on_request", "before_upstream"])
    assert (key["package"], key["version"]) == ("kairos-example-plugins", "0.1.0")
    assert {"header", "keys", "keys_env", "strip"} <= set(key["config_schema"]["properties"])
    headers = by_name["add-headers"]
    assert (headers["priority"], headers["phases"]) == (800, ["before_upstream", "on_response"])
    assert {"request", "response"} <= set(headers["config_schema"]["properties"])
    priorities = [p["priority"] for p in body["plugins"]]
    assert priorities == sorted(priorities, reverse=True)


# -- lifecycle: reloads, failures, slow hooks, early answers -------------------------------


async def test_each_configuration_gets_new_plugin_instances(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    def config(tag: str) -> dict[str, Any]:
        entry = {"name": "recorder", "config": {"tag": tag}}
        return cfg(route("/a", "/a", [backend]), plugins=[entry], hot_reload=False)

    gw = await file_gateway_factory(config("one"), plugins=PluginRegistry([RECORDER]))

    async def served_by() -> list[str]:
        resp = await raw_request(gw.port, "/a")
        assert resp.status == 200
        return headers_of(resp)["x-recorder"]

    first = await served_by()
    assert first == await served_by()  # one instance per route per configuration
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    source.write_text(json.dumps(config("two")))
    assert (await api_call(gw.port, "POST", "/api/config/reload")).status == 200
    second = await served_by()
    assert (await api_call(gw.port, "PUT", "/api/config", config("three"))).status == 200
    third = await served_by()

    ids = [value.split()[0] for [value] in (first, second, third)]
    assert len(set(ids)) == 3
    assert [value.split()[1] for [value] in (first, second, third)] == ["one", "two", "three"]
    assert {str(id(r)) for r in RECORDERS} >= set(ids)


async def test_a_failing_plugin_gets_a_500_and_the_gateway_keeps_serving(
    backend: EchoBackend, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kairos.gateway")
    gw = await gateway_factory(
        cfg(
            route("/broken", "/broken", [backend], plugins=[{"name": "broken"}]),
            route("/fine", "/fine", [backend]),
        ),
        plugins=PluginRegistry([BROKEN]),
    )
    failed = await raw_request(gw.port, "/broken")
    assert failed.status == 500
    assert failed.header("Content-Type") == PROBLEM
    problem = failed.json()
    assert problem["type"] == "policy_failed"
    assert problem["request_id"] == failed.header("X-Request-Id")
    assert "a bug in the plugin" not in failed.body.decode()  # the cause goes to the log only
    assert backend.requests == []

    assert (await raw_request(gw.port, "/fine")).status == 200
    assert logged(caplog, "policy failed") == [
        {"policy": "broken", "request_id": problem["request_id"]}
    ]


@pytest.mark.parametrize("plugin", [SLEEPY, SLEEPY_ASYNC], ids=["sync", "after-await"])
async def test_a_hook_that_blocks_the_event_loop_is_reported(
    plugin: Plugin[Any],
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kairos.gateway")
    quick = {"name": "add-headers", "config": {"request": {"set": {"X-A": "{request_id}"}}}}
    gw = await gateway_factory(
        cfg(route("/a", "/a", [backend]), plugins=[{"name": plugin.name}, quick]),
        plugins=PluginRegistry([plugin]),
        plugin_slow_ms=20,
    )
    resp = await raw_request(gw.port, "/a")
    assert resp.status == 200
    reports = logged(caplog, "plugin blocked the event loop")
    # add-headers is quick; it is left out of the check only so that a loaded machine
    # cannot make this test flaky.
    [report] = [r for r in reports if r["plugin"] == plugin.name]
    assert report["phase"] == "on_request"
    assert report["blocked_ms"] >= 90
    assert report["request_id"] == resp.header("X-Request-Id")


async def test_a_plugin_may_answer_early(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        cfg(route("/a", "/a", [backend], plugins=[{"name": "teapot"}])),
        plugins=PluginRegistry([TEAPOT]),
    )
    resp = await raw_request(gw.port, "/a", method="POST", body=b"tea")
    assert resp.status == 418
    assert resp.json() == {"short": "stout"}
    assert resp.header("X-Teapot") == resp.header("X-Request-Id")
    assert backend.requests == []


async def test_a_failing_response_hook_is_logged_once_and_answered_500(
    backend: EchoBackend, gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kairos.gateway")
    entry = {"name": "broken-on-response"}
    gw = await gateway_factory(
        cfg(route("/a", "/a", [backend], plugins=[entry])),
        plugins=PluginRegistry([BROKEN_ON_RESPONSE]),
    )
    failed = await raw_request(gw.port, "/a")
    assert failed.status == 500
    assert failed.json()["type"] == "policy_failed"
    # Not asked again about its own 500, so one log line for one request.
    assert len(logged(caplog, "policy failed")) == 1
    assert (await raw_request(gw.port, "/a")).status == 500  # and the gateway serves on


async def test_response_hooks_see_the_head_the_client_gets(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    limit = {"algorithm": "fixed_window", "requests_per_second": 1000}
    entry = {"name": "head-recorder"}
    gw = await gateway_factory(
        cfg(route("/a", "/a", [backend], plugins=[entry], rate_limit=limit)),
        plugins=PluginRegistry([HEAD_RECORDER]),
    )
    resp = await raw_request(gw.port, "/a", headers=[("Connection", "keep-alive")])
    assert resp.status == 200
    seen = (resp.header("X-Seen") or "").split(",")
    assert "ratelimit" in seen  # the rate-limit policy's fields are already in
    assert "x-backend" in seen
    assert "connection" not in seen  # hop-by-hop headers are already out
    assert "x-request-id" not in seen  # added after the phase


async def test_route_validation_judges_plugin_entries(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(cfg())
    bad = route("/b", "/b", [backend], plugins=[{"name": "api-key", "config": {"keys": ["x"]}}])
    resp = await api_call(gw.port, "POST", "/api/routes/validate", bad)
    assert resp.status == 200
    body = resp.json()
    assert body["valid"] is False
    (error,) = body["errors"]
    assert error["path"] == "plugins[0].config.keys[0]"
    assert error.get("value") is None  # under a key that sounds secret: not echoed
    good = route("/b", "/b", [backend], plugins=[api_key()])
    assert (await api_call(gw.port, "POST", "/api/routes/validate", good)).json()["valid"]
