"""The ``outlier_detection`` block: defaults, limits, per-route override, derived values."""

from typing import Any

import pytest
from kairos_core import (
    ConfigError,
    OutlierDetectionConfig,
    effective_outlier_detection,
    load_config,
)


def route(**overrides: Any) -> dict[str, Any]:
    return {
        "external_path": "/users/{id}",
        "internal_path": "/v1/users/{id}",
        "methods": ["GET"],
        "backends": [{"host": "http://users", "port": 8080}],
        **overrides,
    }


def config(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "routers": list(routes) if routes else [route()], **top}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    assert len(info.value.errors) == 1, info.value.errors
    return str(info.value.errors[0])


def test_defaults_follow_envoy_except_5xx_counting() -> None:
    assert load_config(config()).outlier_detection == OutlierDetectionConfig(
        enabled=True,
        consecutive_failures=5,
        count_5xx=False,
        consecutive_5xx=5,
        base_ejection_s=30,
        max_ejection_s=300,
        max_ejection_percent=10,
    )


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"consecutive_failures": 0},
            "outlier_detection.consecutive_failures: must be between 1 and 1000",
        ),
        ({"consecutive_5xx": 0}, "outlier_detection.consecutive_5xx: must be between 1 and 1000"),
        ({"base_ejection_s": 0}, "outlier_detection.base_ejection_s: must be > 0"),
        (
            {"max_ejection_percent": 101},
            "outlier_detection.max_ejection_percent: must be between 0 and 100",
        ),
        (
            {"base_ejection_s": 60, "max_ejection_s": 30},
            "base_ejection_s (60) must not exceed max_ejection_s (30)",
        ),
        ({"consecutive_failure": 3}, "consecutive_failure"),
    ],
)
def test_invalid_blocks_name_the_field(block: dict[str, Any], message: str) -> None:
    assert message in error_of(config(outlier_detection=block))


def test_a_routes_block_replaces_the_top_level_one_as_a_whole() -> None:
    cfg = load_config(
        config(
            route(outlier_detection={"consecutive_failures": 2}),
            route(external_path="/other", internal_path="/other"),
            outlier_detection={"consecutive_failures": 9, "base_ejection_s": 5},
        )
    )
    own, inherited = (effective_outlier_detection(r, cfg.outlier_detection) for r in cfg.routers)
    assert (own.consecutive_failures, own.base_ejection_s) == (2, 30)
    assert inherited is cfg.outlier_detection
    assert "routers.0.outlier_detection.max_ejection_s" in error_of(
        config(route(outlier_detection={"max_ejection_s": 0}))
    ).replace("[", ".").replace("]", "")


@pytest.mark.parametrize(
    ("times", "seconds"), [(1, 30), (2, 60), (3, 120), (4, 240), (5, 300), (10_000, 300)]
)
def test_ejection_time_doubles_up_to_the_cap(times: int, seconds: float) -> None:
    assert OutlierDetectionConfig().ejection_s(times) == seconds


@pytest.mark.parametrize(
    ("backends", "percent", "most"),
    [(1, 10, 0), (1, 100, 0), (2, 10, 1), (3, 10, 1), (19, 10, 1), (20, 10, 2), (5, 100, 4)],
)
def test_max_ejected_is_the_share_at_least_one_never_all(
    backends: int, percent: int, most: int
) -> None:
    assert OutlierDetectionConfig(max_ejection_percent=percent).max_ejected(backends) == most
