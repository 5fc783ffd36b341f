"""The bundled ``transform`` plugin: what the backend receives and the client gets."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jwt
import pytest
from kairos_core import ConfigError, load_config
from kairos_core.transform import TransformConfig, parse_template
from kairos_gateway import PluginRegistry

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, raw_request, route

SECRET = "a-transform-test-secret-of-32-bytes!"


def transform(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "transform", "config": config}]


def cfg(*routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes), **extra}


def received(echo: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_request_header_operations_and_every_template_variable(
    backend: EchoBackend, gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAIROS_TEST_REGION", "eu-west")
    config = {
        "request": {
            "headers": {
                "remove": ["X-Debug"],
                "rename": {"X-Old": "X-New"},
                "replace": [
                    {"name": "X-Version", "pattern": r"v(\d+)", "replacement": r"version-\1"}
                ],
                "set": {
                    "X-Tenant": "${header.X-Tenant-Id}",
                    "X-Route": "${route} ${method} ${path.id}",
                    "X-Who": "${claim.sub}/${claim.roles}",
                    "X-Region": "${env.KAIROS_TEST_REGION}",
                    "X-Page": "${query.page}|${query.missing}",
                    "X-Ids": "${request_id}|${client_ip}",
                    "X-Price": "$$5",
                },
                "add": {"X-Added": "yes"},
            }
        }
    }
    gw = await gateway_factory(
        cfg(
            route(
                "/users/{id}", "/u/{id}", [backend], auth_required=True, plugins=transform(config)
            ),
            jwt_secret=SECRET,
        )
    )
    claims = {"sub": "alice", "roles": ["admin", "dev"], "exp": int(time.time()) + 300}
    token = jwt.encode(claims, SECRET, "HS256")
    resp = await raw_request(
        gw.port,
        "/users/42?page=3",
        headers=[
            ("Authorization", f"Bearer {token}"),
            ("X-Debug", "1"),
            ("X-Old", "moved"),
            ("X-Version", "v2"),
            ("X-Tenant-Id", "t-9"),
            ("X-Tenant", "spoofed"),
            ("X-Added", "client"),
            ("X-Request-Id", "req-123"),
        ],
    )
    assert resp.status == 200
    got = received(resp.json())
    assert "x-debug" not in got
    assert "x-old" not in got
    assert got["x-new"] == ["moved"]
    assert got["x-version"] == ["version-2"]
    assert got["x-tenant"] == ["t-9"]
    assert got["x-route"] == ["/users/{id} GET 42"]
    assert got["x-who"] == ["alice/admin,dev"]
    assert got["x-region"] == ["eu-west"]
    assert got["x-page"] == ["3|"]
    assert got["x-ids"] == ["req-123|127.0.0.1"]
    assert got["x-price"] == ["$5"]
    assert got["x-added"] == ["client", "yes"]


async def test_a_template_value_cannot_inject_a_header(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {"request": {"headers": {"set": {"X-Copy": "${query.v}"}}}}
    gw = await gateway_factory(cfg(route("/a", "/a", [backend], plugins=transform(config))))
    resp = await raw_request(gw.port, "/a?v=x%0D%0AX-Injected:%201")
    got = received(resp.json())
    assert got["x-copy"] == ["xX-Injected: 1"]
    assert "x-injected" not in got


async def test_setting_host_sets_the_upstream_host(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {"request": {"headers": {"set": {"Host": "internal.example"}}}}
    gw = await gateway_factory(cfg(route("/a", "/a", [backend], plugins=transform(config))))
    got = received((await raw_request(gw.port, "/a")).json())
    assert got["host"] == ["internal.example"]


async def test_path_rewrite_with_groups_and_templates(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {
        "request": {
            "path": {
                "pattern": r"/legacy/(?P<kind>\w+)/(\d+)",
                "replacement": r"/v2/\g<kind>s/\2/${header.X-Tenant}",
            }
        }
    }
    gw = await gateway_factory(
        cfg(route("/old/{*rest}", "/legacy/{*rest}", [backend], plugins=transform(config)))
    )
    echo = (await raw_request(gw.port, "/old/user/7?x=1", headers=[("X-Tenant", "a b/c")])).json()
    assert echo["uri"] == "/v2/users/7/a%20b%2Fc?x=1"
    # A path the pattern does not match is left as it is.
    echo = (await raw_request(gw.port, "/old/other")).json()
    assert echo["uri"] == "/legacy/other"


async def test_a_rewrite_that_would_make_a_dot_segment_is_refused(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {"request": {"path": {"pattern": r"/in/(\.)x(\.)", "replacement": r"/out/\1\2"}}}
    gw = await gateway_factory(
        cfg(route("/p/{a}", "/in/{a}", [backend], plugins=transform(config)))
    )
    # The parameter is harmless; what the rewrite makes of it is a '..' segment.
    resp = await raw_request(gw.port, "/p/.x.")
    assert resp.status == 400
    assert resp.json()["type"] == "invalid_path"
    assert backend.requests == []


async def test_query_operations_keep_untouched_parameters_as_sent(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {
        "request": {
            "query": {
                "remove": ["debug"],
                "rename": {"q": "search"},
                "set": {"limit": "50"},
                "add": {"from": "${header.X-Source}"},
            }
        }
    }
    gw = await gateway_factory(cfg(route("/s", "/s", [backend], plugins=transform(config))))
    echo = (
        await raw_request(
            gw.port,
            "/s?q=a+b&keep=%2F%7E&debug=1&limit=5&limit=6",
            headers=[("X-Source", "web app")],
        )
    ).json()
    assert echo["uri"] == "/s?search=a+b&keep=%2F%7E&limit=50&from=web%20app"


async def test_response_headers_and_status_mapping(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {
        "response": {
            "headers": {
                "remove": ["Server"],
                "set": {"X-Served-By": "kairos ${route}"},
                "rename": {"Date": "X-Backend-Date"},
            },
            "status": [
                {"from": 404, "to": 404, "problem": True},
                {"from": 418, "to": 200},
            ],
        }
    }
    gw = await gateway_factory(
        cfg(route("/status/{code}", "/status/{code}", [backend], plugins=transform(config)))
    )
    teapot = await raw_request(gw.port, "/status/418")
    assert teapot.status == 200
    assert teapot.body == b"status 418"
    assert teapot.header("X-Served-By") == "kairos /status/{code}"
    assert teapot.header("Server") is None
    assert teapot.header("Date") is None
    assert teapot.header("X-Backend-Date") is not None

    missing = await raw_request(gw.port, "/status/404")
    assert missing.status == 404
    assert missing.header("Content-Type") == "application/problem+json"
    problem = missing.json()
    assert problem["type"] == "backend_status"
    assert problem["detail"] == "the backend answered 404"


async def test_status_mapping_leaves_the_gateways_own_answers_alone(
    gateway_factory: GatewayFactory,
) -> None:
    config = {"response": {"status": [{"from": 502, "to": 200}]}}
    gw = await gateway_factory(
        cfg(route("/down", "/down", ["http://127.0.0.1:1"], plugins=transform(config)))
    )
    resp = await raw_request(gw.port, "/down")
    assert resp.status == 502
    assert resp.json()["type"] == "upstream_error"


def test_the_plugin_is_bundled_and_listed() -> None:
    registry = PluginRegistry(group=None)
    assert "transform" in registry
    info = next(p for p in registry.catalog().plugins if p.name == "transform")
    assert info.package == "kairos-gateway"
    assert info.phases == ["on_headers", "before_upstream", "on_response"]


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        (
            {"request": {"headers": {"set": {"X-A": "${nope}"}}}},
            "plugins[0].config.request.headers.set.X-A",
            "unknown template variable ${nope}",
        ),
        (
            {"request": {"headers": {"set": {"Bad Name": "x"}}}},
            "plugins[0].config.request.headers.set",
            "is not a valid header name",
        ),
        (
            {"request": {"path": {"pattern": "/a/(", "replacement": "/b"}}},
            "plugins[0].config.request.path.pattern",
            "not a valid regular expression",
        ),
        (
            {"request": {"path": {"pattern": "/a/(x)", "replacement": r"/b/\2"}}},
            "plugins[0].config.request.path",
            "replacement uses group 2; the pattern has 1",
        ),
        (
            {"response": {"status": [{"from": 404, "to": 200}, {"from": 404, "to": 201}]}},
            "plugins[0].config.response.status",
            "status 404 is mapped twice",
        ),
    ],
)
def test_bad_settings_are_refused_with_their_field_path(
    config: dict[str, Any], path: str, message: str
) -> None:
    registry = PluginRegistry(group=None)
    loaded = load_config(cfg(route("/a", "/a", ["http://127.0.0.1:9"]), plugins=transform(config)))
    with pytest.raises(ConfigError) as caught:
        registry.check(loaded)
    errors = [(e.path, e.message) for e in caught.value.errors]
    assert any(p.startswith(path) and message in m for p, m in errors), errors


def test_a_missing_environment_variable_is_named() -> None:
    assert "KAIROS_SURELY_UNSET" not in os.environ
    registry = PluginRegistry(group=None)
    loaded = load_config(
        cfg(
            route("/a", "/a", ["http://127.0.0.1:9"]),
            plugins=transform(
                {"request": {"headers": {"set": {"X-A": "${env.KAIROS_SURELY_UNSET}"}}}}
            ),
        )
    )
    assert loaded.plugins is not None
    with pytest.raises(ConfigError) as caught:
        registry.policies([(("plugins", 0), loaded.plugins[0])])
    assert "${env.KAIROS_SURELY_UNSET} is not set" in str(caught.value)


def test_templates_parse_into_literals_and_variables() -> None:
    assert parse_template("a${path.id}$$b") == (("text", "a"), ("path", "id"), ("text", "$b"))
    assert TransformConfig.model_validate({}).request is None


async def test_json_body_fields_are_removed_and_set(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {
        "request": {
            "json_body": {
                "remove": ["password", "meta.internal"],
                "set": {"meta.source": "gateway ${method}", "meta.flags": [1, True], "v": 2},
            }
        }
    }
    gw = await gateway_factory(
        cfg(route("/j", "/j", [backend], methods=["POST"], plugins=transform(config)))
    )
    body = json.dumps({"user": "ann", "password": "x", "meta": {"internal": 1, "keep": "é"}})
    resp = await raw_request(
        gw.port,
        "/j",
        method="POST",
        body=body.encode(),
        headers=[("Content-Type", "application/json; charset=utf-8")],
    )
    echo = resp.json()
    sent = json.loads(echo["body"].encode("latin-1"))
    assert sent == {
        "user": "ann",
        "meta": {"keep": "é", "source": "gateway POST", "flags": [1, True]},
        "v": 2,
    }
    assert received(echo)["content-length"] == [str(len(echo["body"].encode("latin-1")))]


async def test_json_body_edits_leave_other_bodies_and_refuse_bad_json(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    config = {"request": {"json_body": {"remove": ["secret"], "max_bytes": 1024}}}
    gw = await gateway_factory(
        cfg(route("/j", "/j", [backend], methods=["POST"], plugins=transform(config)))
    )
    plain = await raw_request(
        gw.port, "/j", method="POST", body=b"secret=1", headers=[("Content-Type", "text/plain")]
    )
    assert plain.json()["body"] == "secret=1"
    json_type = [("Content-Type", "application/vnd.api+json")]
    broken = await raw_request(gw.port, "/j", method="POST", body=b"{nope", headers=json_type)
    assert broken.status == 400
    assert broken.json()["detail"] == "the request body is not valid JSON"
    large = await raw_request(
        gw.port, "/j", method="POST", body=b'{"a":"' + b"x" * 2000 + b'"}', headers=json_type
    )
    assert large.status == 413
    assert len(backend.requests) == 1  # only the plain one reached it


async def test_kairos_rs_transformation_fields_become_the_plugin(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    legacy = route(
        "/old/{id}",
        "/legacy/{id}",
        [backend],
        request_transformation={
            "headers": [
                {"action": "add", "name": "X-Price", "value": "$5"},
                {"action": "replace", "name": "X-V", "pattern": r"v(\d+)", "replacement": "n$1"},
                {"action": "remove", "name": "X-Debug"},
            ],
            "path": {"pattern": r"/legacy/(\d+)", "replacement": "/v2/${1}"},
            "query_params": [{"action": "set", "name": "limit", "value": "5"}],
        },
        response_transformation={"headers": [{"action": "set", "name": "X-Via", "value": "k"}]},
    )
    gw = await gateway_factory(cfg(legacy))
    resp = await raw_request(gw.port, "/old/7?limit=9", headers=[("X-V", "v3"), ("X-Debug", "1")])
    echo = resp.json()
    assert echo["uri"] == "/v2/7?limit=5"
    got = received(echo)
    assert got["x-price"] == ["$5"]
    assert got["x-v"] == ["n3"]
    assert "x-debug" not in got
    assert resp.header("X-Via") == "k"
