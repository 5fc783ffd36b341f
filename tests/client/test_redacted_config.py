"""kairos-core: a redacted config dump parses with ``load_config(data, redacted=True)``."""

from __future__ import annotations

from typing import Any

import pytest
from kairos_core import ConfigError, load_config, redacted

SECRET = "s3cr3t-" + "k" * 40


def full() -> dict[str, Any]:
    return {
        "version": 1,
        "jwt_secret": SECRET,
        "admin": {"token": "admin-token-" + "z" * 24},
        "routers": [
            {
                "external_path": "/a",
                "internal_path": "/a",
                "methods": ["GET"],
                "auth_required": True,
                "backends": [{"host": "http://127.0.0.1", "port": 3000}],
            }
        ],
    }


def test_a_redacted_dump_fails_plain_validation_but_loads_as_redacted() -> None:
    dump = redacted(load_config(full()))
    assert dump["jwt_secret"] == "***"
    with pytest.raises(ConfigError) as caught:
        load_config(dump)
    assert [e.path for e in caught.value.errors] == ["admin"]  # token too short
    with pytest.raises(ConfigError) as caught:
        load_config({**dump, "admin": {}})
    assert [e.path for e in caught.value.errors] == ["jwt_secret"]  # secret too weak
    config = load_config(dump, redacted=True)
    assert config.jwt_secret is not None
    assert config.jwt_secret.get_secret_value() == "***"
    assert redacted(config) == dump


def test_token_sha256_placeholder() -> None:
    data = {**full(), "admin": {"token_sha256": "***"}}
    assert load_config(data, redacted=True).admin.token_sha256 is not None
    with pytest.raises(ConfigError):
        load_config(data)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"jwt_secret": "short"}, "jwt_secret"),  # only the exact placeholder is excused
        ({"jwt_secret": "****"}, "jwt_secret"),
        ({"admin": {"token": "***", "token_sha256": "***"}}, "admin"),  # other rules hold
        ({"jwt_secret": "***", "jwt": {"secret": SECRET}}, "jwt.secret"),
    ],
)
def test_other_rules_still_apply(change: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({**full(), **change}, redacted=True)
    assert path in {e.path for e in caught.value.errors}
