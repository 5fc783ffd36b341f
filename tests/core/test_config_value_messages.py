"""Messages for a value of the wrong kind: numbers must be JSON numbers, and a near
miss of an allowed value gets a suggestion, like an unknown key does."""

from __future__ import annotations

from typing import Any

import pytest
from kairos_core import ConfigError, load_config

ROUTE = {
    "external_path": "/a",
    "internal_path": "/a",
    "methods": ["GET"],
    "backends": [{"host": "http://127.0.0.1", "port": 8080}],
}


def _errors(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return [str(error) for error in caught.value.errors]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"version": "1"}, 'version: must be an integer, not a string (got "1")'),
        ({"version": True}, "version: must be an integer, not true or false (got true)"),
        (
            {"rate_limit": {"requests_per_second": True}},
            "rate_limit.requests_per_second: must be a number, not true or false (got true)",
        ),
        (
            {"routers": [{**ROUTE, "backends": [{"host": "http://a", "port": "8080"}]}]},
            'routers[0].backends[0].port: must be an integer, not a string (got "8080")',
        ),
        (
            {"max_body_size": "10"},
            'max_body_size: must be an integer, not a string (got "10")',
        ),
    ],
)
def test_numbers_must_be_json_numbers(config: dict[str, Any], expected: str) -> None:
    assert _errors({"version": 1, "routers": [], **config}) == [expected]


@pytest.mark.parametrize("version", [1, 2, 1.0])
def test_a_number_is_still_a_number(version: float) -> None:
    assert load_config({"version": version, "routers": []}).version == int(version)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (
            {"load_balancing_strategy": "roundrobin"},
            "routers[0].load_balancing_strategy: must be one of: round_robin, "
            "least_connections, random, weighted, ip_hash, latency_aware; "
            "did you mean 'round_robin'? (got \"roundrobin\")",
        ),
        (
            {"load_balancing_strategy": "Least-Connections"},
            "did you mean 'least_connections'?",
        ),
        ({"methods": ["GTE"]}, "routers[0].methods[0]: must be one of: GET,"),
        ({"methods": ["GTE"]}, "did you mean 'GET'?"),
        ({"protocol": "websockets"}, "did you mean 'websocket'?"),
    ],
)
def test_a_near_miss_gets_a_suggestion(route: dict[str, Any], expected: str) -> None:
    (message,) = _errors({"version": 1, "routers": [{**ROUTE, **route}]})
    assert expected in message


def test_no_suggestion_for_a_value_near_nothing() -> None:
    (message,) = _errors({"version": 1, "routers": [{**ROUTE, "load_balancing_strategy": "zzz"}]})
    assert "did you mean" not in message
    assert message.endswith('latency_aware (got "zzz")')


@pytest.mark.parametrize(
    "url", ["redis://[bad", "redis://host:99999", "redis://host:port", "rediss://[::1"]
)
def test_a_redis_url_that_does_not_parse_is_refused(url: str) -> None:
    (message,) = _errors(
        {
            "version": 1,
            "routers": [],
            "rate_limit": {"requests_per_second": 1, "backend": "redis", "redis_url": url},
        }
    )
    assert message.startswith("rate_limit.redis_url: is not a valid URL (")
