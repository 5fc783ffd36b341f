"""`/api/config`: secrets never shown, "***" keeps them, sections, reload, status, bad input."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, RawResponse, api_call, raw_request, route

JWT_SECRET = "j" * 40
REDIS_PASSWORD = "hunter2-redis-password"


async def call(
    gw: RunningGateway,
    method: str,
    target: str,
    body: Any = None,
    *,
    headers: list[tuple[str, str]] | None = None,
) -> RawResponse:
    return await api_call(gw.port, method, target, body, headers=headers)


def secret_config(backend: EchoBackend) -> dict[str, Any]:
    return {
        "version": 1,
        "jwt": {"secret": JWT_SECRET, "issuer": "kairos"},
        "rate_limit": {
            "requests_per_second": 100,
            "backend": "redis",
            "redis_url": f"redis://user:{REDIS_PASSWORD}@127.0.0.1:1/0",
        },
        "routers": [route("/a", "/a", [backend])],
    }


async def test_get_config_never_reveals_a_secret(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(secret_config(backend))
    resp = await call(gw, "GET", "/api/config")
    assert resp.status == 200
    assert JWT_SECRET.encode() not in resp.body
    assert REDIS_PASSWORD.encode() not in resp.body
    body = resp.json()
    assert body["jwt"]["secret"] == "***"
    assert body["rate_limit"]["redis_url"] == "redis://user:***@127.0.0.1:1/0"
    section = await call(gw, "GET", "/api/config/jwt")
    assert section.json()["secret"] == "***"
    assert resp.header("ETag") == section.header("ETag")


async def test_put_back_what_was_read_keeps_every_secret(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(secret_config(backend))
    current = (await call(gw, "GET", "/api/config")).json()
    current["routers"].append(route("/b", "/b", [backend]))
    resp = await call(gw, "PUT", "/api/config", current)
    assert resp.status == 200, resp.body
    assert JWT_SECRET.encode() not in resp.body
    config = gw.gateway.runtime.snapshot.config
    assert config.jwt is not None
    assert config.jwt.secret is not None
    assert config.jwt.secret.get_secret_value() == JWT_SECRET
    assert config.rate_limit is not None
    assert REDIS_PASSWORD in (config.rate_limit.redis_url or "")
    assert config.routers[1].external_path == "/b"
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    assert JWT_SECRET in source.read_text()  # the file keeps the real value
    assert (await raw_request(gw.port, "/b")).status == 200


async def test_section_updates(backend: EchoBackend, file_gateway_factory: GatewayFactory) -> None:
    gw = await file_gateway_factory(secret_config(backend))
    jwt = (await call(gw, "GET", "/api/config/jwt")).json()
    jwt["issuer"] = "someone-else"
    resp = await call(gw, "PUT", "/api/config/jwt", jwt)
    assert resp.status == 200, resp.body
    assert resp.json()["issuer"] == "someone-else"
    config = gw.gateway.runtime.snapshot.config
    assert config.jwt is not None
    assert config.jwt.secret is not None
    assert config.jwt.secret.get_secret_value() == JWT_SECRET

    cors = {"allowed_origins": ["https://app.example"]}
    assert (await call(gw, "PUT", "/api/config/cors", cors)).status == 200
    got = (await call(gw, "GET", "/api/config/cors")).json()
    assert got["allowed_origins"] == ["https://app.example"]
    assert (await call(gw, "PUT", "/api/config/rate_limit", None)).status == 415
    removed = await raw_request(
        gw.port,
        "/api/config/rate_limit",
        method="PUT",
        body=b"null",
        headers=[("Content-Type", "application/json")],
    )
    assert removed.status == 200
    assert gw.gateway.runtime.snapshot.config.rate_limit is None
    bad = await call(gw, "PUT", "/api/config/cors", {"allowed_origin": ["x"]})
    assert bad.status == 422
    assert "cors.allowed_origin" in [e["path"] for e in bad.json()["errors"]]
    assert (await call(gw, "GET", "/api/config/nope")).status == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"version": 1, "routers": [', "application/json", 400),
        (b'{"version": 1, "version": 2, "routers": []}', "application/json", 400),
        (b'{"version": 1, "routers": []}', "text/plain", 415),
        (b'{"version": 1, "routers": []}', None, 415),
        (b"[]", "application/json", 422),
        (b'{"version": 1, "routers": [], "rout": []}', "application/json", 422),
        (b"\xff\xfe", "application/json", 400),
    ],
)
async def test_bad_input(
    gateway_factory: GatewayFactory, body: bytes, content_type: str | None, status: int
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    headers = [] if content_type is None else [("Content-Type", content_type)]
    resp = await raw_request(gw.port, "/api/config", method="PUT", body=body, headers=headers)
    assert resp.status == status, resp.body
    assert resp.header("Content-Type") == "application/problem+json"
    problem = resp.json()
    assert problem["status"] == status
    if status == 422 and b"rout" in body:
        assert [e["path"] for e in problem["errors"]] == ["rout"]
        assert "rout" in problem["errors"][0]["message"] or problem["errors"][0]["message"]
    assert gw.gateway.runtime.snapshot.generation == 1


async def test_body_over_one_mib_is_413(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(
        gw.port,
        "/api/routes",
        method="POST",
        body=b"x" * (1024 * 1024 + 1),
        headers=[("Content-Type", "application/json")],
    )
    assert resp.status == 413


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/api/routes/validate", 405),
        ("GET", "/api/config/reload", 405),
        ("DELETE", "/api/config", 405),
        ("GET", "/api/routes/not-a-path", 404),
        ("GET", "/api/config/status/extra", 404),
        ("GET", "/api/metrics/nope", 404),
    ],
)
async def test_unknown_paths_and_methods(
    gateway_factory: GatewayFactory, method: str, target: str, status: int
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    resp = await raw_request(gw.port, target, method=method)
    assert resp.status == status
    if status == 405:
        assert resp.header("Allow")


async def test_reload_invalid_file_keeps_serving_and_reports(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(
        {"version": 1, "hot_reload": False, "routers": [route("/a", "/a", [backend])]}
    )
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    source.write_text(json.dumps({"version": 1, "routers": [{"external_path": "/b"}]}))
    resp = await call(gw, "POST", "/api/config/reload")
    assert resp.status == 422
    assert any(e["path"].startswith("routers[0]") for e in resp.json()["errors"])
    assert (await raw_request(gw.port, "/a")).status == 200
    status = (await call(gw, "GET", "/api/config/status")).json()
    assert status["last_reload"]["ok"] is False
    assert status["last_reload"]["trigger"] == "api"
    assert status["last_reload"]["errors"]
    assert status["config_version"] == 1

    source.write_text(json.dumps({"version": 1, "routers": [route("/b", "/b", [backend])]}))
    ok = await call(gw, "POST", "/api/config/reload")
    assert ok.status == 200
    assert ok.json()["last_reload"]["ok"] is True
    assert ok.json()["config_version"] == 2
    assert (await raw_request(gw.port, "/a")).status == 404
    assert (await raw_request(gw.port, "/b")).status == 200


async def test_status_describes_the_running_config(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory({"version": 1, "routers": [route("/a", "/a", [backend])]})
    status = (await call(gw, "GET", "/api/config/status")).json()
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    assert status["source_path"] == str(source)
    assert status["persisted"] is True
    assert status["hot_reload"] is True
    assert status["watcher_running"] is True
    assert status["last_reload"] is None
    assert status["routes"] == 1
    assert len(status["file_sha256"]) == 64
    assert status["file_changed_on_disk"] is False

    memory = await gateway_factory({"version": 1, "routers": []})
    status = (await call(memory, "GET", "/api/config/status")).json()
    assert status["persisted"] is False
    assert status["source_path"] is None
    assert (await call(memory, "POST", "/api/config/reload")).status == 409
    # Without a file, changes still apply (in memory only).
    created = await call(memory, "POST", "/api/routes", route("/m", "/m", [backend]))
    assert created.status == 201
    assert (await raw_request(memory.port, "/m")).status == 200


async def test_logs_never_print_a_secret(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "t0ken-" + "s" * 30
    config = {**secret_config(backend), "admin": {"token": token}}
    gw = await file_gateway_factory(config)
    auth = [("Authorization", f"Bearer {token}")]
    current = (await call(gw, "GET", "/api/config", headers=auth)).json()
    assert current["admin"]["token"] == "***"
    current["jwt"]["secret"] = "short"
    assert (await call(gw, "PUT", "/api/config", current, headers=auth)).status == 422
    current["jwt"]["secret"] = "***"
    assert (await call(gw, "PUT", "/api/config", current, headers=auth)).status == 200
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    source.write_text(json.dumps({**config, "routers": [{"bad": True}]}))
    assert (await call(gw, "POST", "/api/config/reload", headers=auth)).status == 422
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "configuration applied" in text
    for secret in (JWT_SECRET, REDIS_PASSWORD, token):
        assert secret not in text
