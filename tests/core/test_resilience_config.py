"""Circuit-breaker, health-check, retry-budget and total-deadline settings."""

import json
from typing import Any

import pytest
from kairos_core import (
    CircuitBreakerConfig,
    ConfigError,
    HealthCheckConfig,
    RetryConfig,
    RouteTimeouts,
    Timeouts,
    config_to_json,
    effective_circuit_breaker,
    effective_health_check,
    effective_timeouts,
    load_config,
)
from pydantic import ValidationError


def route(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "external_path": "/users/{id}",
        "internal_path": "/v1/users/{id}",
        "methods": ["GET"],
        "backends": [{"host": "http://users", "port": 8080}],
    }
    base.update(overrides)
    return base


def config(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes) if routes else [route()], **top}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    assert len(info.value.errors) == 1, info.value.errors
    return str(info.value.errors[0])


def test_defaults() -> None:
    cfg = load_config(config())
    assert cfg.circuit_breaker == CircuitBreakerConfig(
        failure_threshold=5,
        reset_timeout_s=30,
        half_open_max_calls=1,
        success_threshold=1,
        failure_status_codes=[],
    )
    assert cfg.health_check == HealthCheckConfig(
        interval_s=10,
        timeout_s=2,
        healthy_threshold=2,
        unhealthy_threshold=3,
        expected_status_min=200,
        expected_status_max=399,
    )
    assert cfg.timeouts.total_ms is None
    router = cfg.routers[0]
    assert (router.circuit_breaker, router.health_check) == (None, None)
    retry = RetryConfig()
    assert (retry.budget_ratio, retry.budget_min_retries, retry.budget_window_s) == (0.2, 3, 10)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            config(circuit_breaker={"failure_threshold": 0}),
            "circuit_breaker.failure_threshold: must be >= 1 (got 0)",
        ),
        (
            config(circuit_breaker={"reset_timeout_s": 0}),
            "circuit_breaker.reset_timeout_s: must be > 0 and <= 3600 (got 0)",
        ),
        (
            config(circuit_breaker={"reset_timeout_s": 3601}),
            "circuit_breaker.reset_timeout_s: must be > 0 and <= 3600 (got 3601)",
        ),
        (
            config(circuit_breaker={"half_open_max_calls": 0}),
            "circuit_breaker.half_open_max_calls: must be >= 1",
        ),
        (
            config(circuit_breaker={"success_threshold": 0}),
            "circuit_breaker.success_threshold: must be >= 1",
        ),
        (
            config(circuit_breaker={"failure_status_codes": [500, 404]}),
            "circuit_breaker.failure_status_codes[1]: must be between 500 and 599 (got 404)",
        ),
        (
            config(circuit_breaker={"failure_treshold": 3}),
            "circuit_breaker.failure_treshold: unknown field; did you mean 'failure_threshold'?",
        ),
        (
            config(route(circuit_breaker={"failure_threshold": -1})),
            "routers[0].circuit_breaker.failure_threshold: must be >= 1 (got -1)",
        ),
        (
            config(health_check={"interval_s": 0.01}),
            "health_check.interval_s: must be between 0.05 and 3600 (got 0.01)",
        ),
        (
            config(health_check={"timeout_s": 0}),
            "health_check.timeout_s: must be > 0 and <= 3600 (got 0)",
        ),
        (
            config(health_check={"interval_s": 1, "timeout_s": 2}),
            "health_check: timeout_s (2) must not exceed interval_s (1)",
        ),
        (
            config(route(health_check={"interval_s": 1})),  # default timeout_s is 2
            "routers[0].health_check: timeout_s (2) must not exceed interval_s (1)",
        ),
        (
            config(health_check={"healthy_threshold": 0}),
            "health_check.healthy_threshold: must be >= 1",
        ),
        (
            config(health_check={"unhealthy_threshold": 0}),
            "health_check.unhealthy_threshold: must be >= 1",
        ),
        (
            config(health_check={"expected_status_min": 99}),
            "health_check.expected_status_min: must be between 100 and 599 (got 99)",
        ),
        (
            config(health_check={"expected_status_min": 300, "expected_status_max": 299}),
            "expected_status_min (300) must not exceed expected_status_max (299)",
        ),
        (
            config(route(retry_config={"budget_ratio": 1.5})),
            "routers[0].retry_config.budget_ratio: must be between 0 and 1 (got 1.5)",
        ),
        (
            config(route(retry={"budget_min_retries": -1})),
            "routers[0].retry.budget_min_retries: must be >= 0 (got -1)",
        ),
        (
            config(route(retry_config={"budget_window_s": 0})),
            "routers[0].retry_config.budget_window_s: must be > 0 and <= 300 (got 0)",
        ),
        (
            config(route(retry_config={"budget_window_s": 301})),
            "budget_window_s: must be > 0 and <= 300 (got 301)",
        ),
        (
            config(timeouts={"total_ms": 0}),
            "timeouts.total_ms: must be between 1 and 3600000 (got 0)",
        ),
        (
            config(route(timeouts={"total_ms": 3_600_001})),
            "routers[0].timeouts.total_ms: must be between 1 and 3600000 (got 3600001)",
        ),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], expected: str) -> None:
    assert expected in error_of(data)


@pytest.mark.parametrize(
    ("block", "value"),
    [
        ({"failure_threshold": 1}, 1),
        ({"reset_timeout_s": 0.001}, 0.001),
        ({"reset_timeout_s": 3600}, 3600),
        ({"failure_status_codes": [500, 599]}, [500, 599]),
    ],
)
def test_breaker_bounds_accepted(block: dict[str, Any], value: object) -> None:
    cfg = load_config(config(circuit_breaker=block))
    assert getattr(cfg.circuit_breaker, next(iter(block))) == value


@pytest.mark.parametrize(
    ("block", "ok_statuses", "bad_statuses"),
    [
        ({}, [200, 301, 399], [199, 400, 500]),
        ({"expected_status_min": 204, "expected_status_max": 204}, [204], [200, 205]),
        ({"interval_s": 0.05, "timeout_s": 0.05}, [200], [404]),  # timeout == interval is fine
    ],
)
def test_health_check_status_range(
    block: dict[str, Any], ok_statuses: list[int], bad_statuses: list[int]
) -> None:
    check = load_config(config(health_check=block)).health_check
    assert all(check.status_ok(s) for s in ok_statuses)
    assert not any(check.status_ok(s) for s in bad_statuses)


def test_route_block_replaces_the_top_level_block() -> None:
    cfg = load_config(
        config(
            route(circuit_breaker={"failure_threshold": 2}, health_check={"interval_s": 5}),
            route(external_path="/other", internal_path="/other"),
            circuit_breaker={"failure_threshold": 9, "reset_timeout_s": 5},
            health_check={"interval_s": 30, "healthy_threshold": 4},
        )
    )
    own, inherits = cfg.routers
    # Replaced whole: fields the route leaves out take model defaults, not top-level values.
    assert effective_circuit_breaker(own, cfg.circuit_breaker) == CircuitBreakerConfig(
        failure_threshold=2
    )
    assert effective_health_check(own, cfg.health_check) == HealthCheckConfig(interval_s=5)
    assert effective_circuit_breaker(inherits, cfg.circuit_breaker) is cfg.circuit_breaker
    assert effective_health_check(inherits, cfg.health_check) is cfg.health_check


@pytest.mark.parametrize(
    ("top", "own", "expected"),
    [
        ({}, None, None),
        ({"total_ms": 9000}, None, 9000),
        ({"total_ms": 9000}, {"read_ms": 5}, 9000),
        ({"total_ms": 9000}, {"total_ms": 100}, 100),
        ({}, {"total_ms": 100}, 100),
    ],
)
def test_effective_total_deadline(
    top: dict[str, Any], own: dict[str, Any] | None, expected: int | None
) -> None:
    data = route() if own is None else route(timeouts=own)
    cfg = load_config(config(data, timeouts=top))
    assert effective_timeouts(cfg.routers[0], cfg.timeouts).total_ms == expected


def test_effective_timeouts_keeps_other_fields() -> None:
    router = load_config(config(route(timeouts={"total_ms": 50}))).routers[0]
    defaults = Timeouts(connect_ms=10, read_ms=20, total_ms=None)
    assert effective_timeouts(router, defaults) == Timeouts(connect_ms=10, read_ms=20, total_ms=50)
    assert RouteTimeouts().total_ms is None


def test_kairos_rs_config_still_loads() -> None:
    # The shape kairos-rs's own code reads: jwt block, `retry` alias with
    # `retry_on_status_codes`, legacy host/port; no resilience blocks at all.
    cfg = load_config(
        {
            "version": 1,
            "jwt": {"secret": "s" * 32, "issuer": "kairos", "audience": "api"},
            "routers": [
                {
                    "host": "http://localhost",
                    "port": 3000,
                    "external_path": "/a/{id}",
                    "internal_path": "/a/{id}",
                    "methods": ["GET", "POST"],
                    "auth_required": True,
                    "retry": {"max_retries": 2, "retry_on_status_codes": [503]},
                }
            ],
        }
    )
    retry = cfg.routers[0].retry_config
    assert retry is not None
    assert (retry.retryable_status_codes, retry.budget_ratio) == ([503], 0.2)
    assert cfg.circuit_breaker == CircuitBreakerConfig()


def test_round_trip_keeps_resilience_settings() -> None:
    data = config(
        route(
            circuit_breaker={"failure_status_codes": [503]},
            retry_config={"budget_ratio": 0.5},
            timeouts={"total_ms": 700},
        ),
        health_check={"interval_s": 3, "timeout_s": 1},
    )
    cfg = load_config(data)
    assert load_config(json.loads(config_to_json(cfg))) == cfg


def test_blocks_are_frozen() -> None:
    block = CircuitBreakerConfig()
    with pytest.raises(ValidationError):
        block.failure_threshold = 2  # type: ignore[misc]
