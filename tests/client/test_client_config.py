"""Configuration through the client: whole config (redacted), sections, status, reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kairos_client import Conflict, ValidationFailed
from kairos_core import CorsConfig, GatewayConfig, JwtConfig, RateLimitConfig

from tests.client.support import client_for
from tests.conftest import GatewayFactory, RunningGateway
from tests.support import EchoBackend, route

SECRET = "s3cr3t-" + "k" * 40
TOKEN = "admin-token-" + "z" * 24


def on_disk(gw: RunningGateway) -> dict[str, Any]:
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    data: dict[str, Any] = json.loads(source.read_text())
    return data


def secured(backend: EchoBackend) -> dict[str, Any]:
    return {
        "version": 1,
        "jwt_secret": SECRET,
        "admin": {"token": TOKEN},
        "rate_limit": {
            "requests_per_second": 100,
            "backend": "redis",
            "redis_url": "redis://user:hunter2@127.0.0.1:6379/0",
        },
        "routers": [route("/api/{*rest}", "/{*rest}", [backend], auth_required=True)],
    }


async def test_redacted_config_is_a_real_model_and_round_trips(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory(secured(backend))
    async with client_for(gw, token=TOKEN) as client:
        read = await client.get_config()
        config = read.value
        assert isinstance(config, GatewayConfig)
        assert config.jwt_secret is not None
        assert config.jwt_secret.get_secret_value() == "***"
        assert config.admin.token is not None
        assert config.admin.token.get_secret_value() == "***"
        assert config.rate_limit is not None
        assert config.rate_limit.redis_url == "redis://user:***@127.0.0.1:6379/0"
        assert read.etag is not None

        changed = config.model_copy(update={"hot_reload": False})
        written = await client.replace_config(changed, if_match=read.etag)
        assert written.value.hot_reload is False
        assert written.etag != read.etag

    saved = on_disk(gw)
    assert saved["jwt_secret"] == SECRET  # "***" sent back kept the secret
    assert saved["admin"]["token"] == TOKEN
    assert saved["rate_limit"]["redis_url"] == "redis://user:hunter2@127.0.0.1:6379/0"
    assert saved["hot_reload"] is False


async def test_replace_config_from_plain_data_and_its_errors(
    backend: EchoBackend, file_gateway_factory: GatewayFactory
) -> None:
    gw = await file_gateway_factory({"version": 1, "routers": []})
    async with client_for(gw) as client:
        plain = route("/a", "/a", [backend])
        replaced = await client.replace_config({"version": 1, "routers": [plain]})
        assert [r.external_path for r in replaced.value.routers] == ["/a"]
        weak = {
            "version": 1,
            "jwt_secret": "short",
            "routers": [{**plain, "auth_required": True}],
        }
        with pytest.raises(ValidationFailed) as caught:
            await client.replace_config(weak)
        assert [e.path for e in caught.value.errors] == ["jwt_secret"]
        with pytest.raises(ValidationFailed) as caught:
            await client.replace_config({"version": 1, "routers": [], "routerz": []})
        assert "routerz" in {e.path for e in caught.value.errors}


async def test_sections(file_gateway_factory: GatewayFactory) -> None:
    gw = await file_gateway_factory({"version": 1, "routers": []})
    async with client_for(gw) as client:
        assert (await client.get_jwt_config()).value is None
        assert (await client.get_rate_limit_config()).value is None
        empty = await client.get_cors_config()
        assert empty.value is None

        cors = await client.update_cors_config(
            CorsConfig(allowed_origins=["https://app.example"]), if_match=empty.etag
        )
        assert isinstance(cors.value, CorsConfig)
        assert cors.value.allowed_origins == ["https://app.example"]
        assert (await client.get_cors_config()).value == cors.value
        with pytest.raises(ValidationFailed) as caught:
            await client.update_cors_config({"allowed_origin": ["https://x.example"]})
        assert "cors.allowed_origin" in {e.path for e in caught.value.errors}
        assert (await client.update_cors_config(None)).value is None

        limit = await client.update_rate_limit_config(RateLimitConfig(requests_per_second=50))
        assert limit.value is not None
        assert limit.value.requests_per_second == 50
        assert (await client.get_rate_limit_config()).value == limit.value

        jwt = await client.update_jwt_config(JwtConfig.model_validate({"secret": SECRET}))
        assert jwt.value is not None
        assert jwt.value.secret is not None
        assert jwt.value.secret.get_secret_value() == "***"
        read = await client.get_jwt_config()
        assert read.value == jwt.value
        assert read.value is not None
        again = read.value.model_copy(update={"leeway_s": 5})
        assert (await client.update_jwt_config(again, if_match=read.etag)).value is not None
        assert on_disk(gw)["jwt"] == {**on_disk(gw)["jwt"], "secret": SECRET, "leeway_s": 5}
        assert (await client.update_jwt_config(None)).value is None
        assert "jwt" not in on_disk(gw)


async def test_status_and_reload(file_gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = await file_gateway_factory({"version": 1, "routers": [], "hot_reload": False})
    async with client_for(gw) as client:
        status = await client.config_status()
        assert status.config_version == 1
        assert status.persisted
        assert status.source_path == str(tmp_path / "config.json")
        assert status.etag == (await client.list_routes()).etag

        source = tmp_path / "config.json"
        source.write_text(
            json.dumps({"version": 1, "routers": [], "hot_reload": False, "max_body_size": 10})
        )
        assert (await client.config_status()).file_changed_on_disk
        with pytest.raises(Conflict) as caught:  # an edit on disk is never overwritten
            await client.update_cors_config(None)
        assert "changed on disk" in caught.value.detail

        reloaded = await client.reload(if_match=status.etag)
        assert reloaded.config_version == 2
        assert reloaded.last_reload is not None
        assert reloaded.last_reload.ok
        assert reloaded.last_reload.trigger == "api"
        assert (await client.get_config()).value.max_body_size == 10

        source.write_text(json.dumps({"version": 1, "routers": [{"external_path": "/x"}]}))
        with pytest.raises(ValidationFailed) as failed:
            await client.reload()
        assert any(e.path.startswith("routers[0]") for e in failed.value.errors)
        after = await client.config_status()
        assert after.config_version == 2
        assert after.last_reload is not None
        assert not after.last_reload.ok


async def test_reload_without_a_file_conflicts(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    async with client_for(gw) as client:
        assert not (await client.config_status()).persisted
        with pytest.raises(Conflict):
            await client.reload()
