"""The AI section's data shaping (kairos_ui.ai_usage): minutes to series, the busiest
consumers, table rows and chart options, without a browser."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from kairos_core.ai import AiTargetStatus, AiUsageMinute, AiUsageReport, AiUsageRow
from kairos_ui import ai_usage
from kairos_ui.ai_usage import (
    OTHER,
    cost,
    has_ai_route,
    minute_axis,
    minute_chart,
    problem_series,
    target_rows,
    token_series,
    top_names,
    usage_rows,
)

T0 = 1_800_000_000 - 1_800_000_000 % 60  # a minute's start


def minute(
    offset: int,
    models: dict[str, int] | None = None,
    consumers: dict[str, int] | None = None,
    errors: int = 0,
    fallbacks: int = 0,
) -> AiUsageMinute:
    return AiUsageMinute(
        minute=T0 + 60 * offset,
        tokens_by_model=models or {},
        tokens_by_consumer=consumers or {},
        errors=errors,
        fallbacks=fallbacks,
    )


def values(series: list[tuple[str, list[list[Any]]]]) -> dict[str, list[int]]:
    return {name: [value for _, value in data] for name, data in series}


def row(**changes: Any) -> AiUsageRow:
    fields: dict[str, Any] = {
        "route": "/v1/{*rest}",
        "consumer": "header:red",
        "provider": "p",
        "model": "m",
        "requests": 3,
        "errors": 1,
        "fallbacks": 0,
        "prompt_tokens": 1200,
        "completion_tokens": 34,
        "estimated_tokens": 0,
        "cost": 0.0,
    }
    return AiUsageRow(**(fields | changes))


@pytest.mark.parametrize(
    ("report", "present"),
    [
        (AiUsageReport(usage=[], minutes=[], targets=[]), False),
        (
            AiUsageReport(
                usage=[],
                minutes=[],
                targets=[
                    AiTargetStatus(target="p m", breaker="closed", inflight=0, latency_ms=None)
                ],
            ),
            True,
        ),
        (AiUsageReport(usage=[row()], minutes=[], targets=[]), True),
    ],
)
def test_an_empty_report_means_no_ai_route(report: AiUsageReport, present: bool) -> None:
    assert has_ai_route(report) is present


@pytest.mark.parametrize(
    ("offsets", "now_offset", "first", "last"),
    [
        ([0], 0.5, -59, 0),  # ends with the current minute, 60 of them
        ([-3, 0], 10.2, -49, 10),  # a quiet while since: still shown, at the left
        ([2], 0, -57, 2),  # the gateway's clock ahead of ours: its minute is the last
    ],
)
def test_the_axis_is_the_last_hour_minute_by_minute(
    offsets: list[int], now_offset: float, first: int, last: int
) -> None:
    axis = minute_axis([minute(o) for o in offsets], T0 + 60 * now_offset)
    assert len(axis) == 60
    assert (axis[0], axis[-1]) == (T0 + 60 * first, T0 + 60 * last)
    assert all(b - a == 60 for a, b in itertools.pairwise(axis))


@pytest.mark.parametrize("minutes", [[], [minute(-61)]])
def test_no_axis_without_a_minute_in_the_last_hour(minutes: list[AiUsageMinute]) -> None:
    assert minute_axis(minutes, T0 + 30) == []


def test_tokens_by_model_fill_quiet_minutes_with_zero() -> None:
    minutes = [minute(-2, {"gpt": 10, "claude": 5}), minute(0, {"gpt": 7})]
    axis = minute_axis(minutes, T0)
    series = token_series(minutes, axis, "model")
    got = values(series)
    assert list(got) == ["gpt", "claude"]  # the busiest first
    assert got["gpt"][-3:] == [10, 0, 7]
    assert got["claude"][-3:] == [5, 0, 0]
    assert sum(got["gpt"]) == 17
    assert series[0][1][-1][0] == ai_usage.iso_time(T0)  # ISO times for the time axis


def test_consumers_past_the_busiest_are_summed_as_other() -> None:
    minutes = [
        minute(-1, consumers={"a": 50, "b": 40, "c": 3, "d": 2}),
        minute(0, consumers={"a": 1, "e": 9}),
    ]
    axis = minute_axis(minutes, T0)
    got = values(token_series(minutes, axis, "consumer", limit=2))
    assert list(got) == ["a", "b", OTHER]
    assert got["a"][-2:] == [50, 1]
    assert got["b"][-2:] == [40, 0]
    assert got[OTHER][-2:] == [5, 9]
    total = sum(sum(m.tokens_by_consumer.values()) for m in minutes)
    assert sum(sum(v) for v in got.values()) == total  # nothing lost or counted twice


def test_the_gateways_own_other_consumer_takes_the_rest_when_among_the_busiest() -> None:
    minutes = [minute(0, consumers={OTHER: 100, "a": 10, "b": 1})]
    got = values(token_series(minutes, minute_axis(minutes, T0), "consumer", limit=1))
    assert list(got) == [OTHER]
    assert got[OTHER][-1] == 111


def test_no_other_series_when_every_consumer_fits() -> None:
    minutes = [minute(0, consumers={"a": 1, "b": 2})]
    got = values(token_series(minutes, minute_axis(minutes, T0), "consumer", limit=5))
    assert list(got) == ["b", "a"]


def test_minutes_outside_the_axis_are_left_out() -> None:
    minutes = [minute(-70, {"old": 999}), minute(0, {"new": 1})]
    got = values(token_series(minutes, minute_axis(minutes, T0), "model"))
    assert list(got) == ["new"]


@pytest.mark.parametrize(
    ("totals", "limit", "expected"),
    [
        ({"a": 1, "b": 3, "c": 2}, 2, ["b", "c"]),
        ({"b": 2, "a": 2}, 5, ["a", "b"]),  # ties by name
        ({}, 3, []),
    ],
)
def test_top_names(totals: dict[str, int], limit: int, expected: list[str]) -> None:
    assert top_names(totals, limit) == expected


def test_errors_and_fallbacks_per_minute() -> None:
    minutes = [minute(-1, errors=2, fallbacks=1), minute(0, errors=0, fallbacks=3)]
    got = values(problem_series(minutes, minute_axis(minutes, T0)))
    assert got["errors"][-3:] == [0, 2, 0]
    assert got["fallbacks"][-3:] == [0, 1, 3]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0, "0"), (0.00015, "0.00015"), (1.5, "1.5"), (1234.0, "1,234"), (0.0000004, "0")],
)
def test_cost(value: float, shown: str) -> None:
    assert cost(value) == shown


def test_usage_rows_mark_estimated_tokens() -> None:
    reported, estimated = usage_rows(
        [row(), row(consumer="header:blue", estimated_tokens=40, cost=0.00042)]
    )
    assert reported["prompt_tokens"] == "1,200"
    assert reported["completion_tokens"] == "34"
    assert estimated["prompt_tokens"] == "\u2248 1,200"
    assert estimated["completion_tokens"] == "\u2248 34"
    assert estimated["cost"] == "0.00042"
    assert (estimated["requests"], estimated["errors"], estimated["fallbacks"]) == (3, 1, 0)
    assert reported["key"] != estimated["key"]  # one table row each


def test_target_rows() -> None:
    rows = target_rows(
        [
            AiTargetStatus(target="p m", breaker="half_open", inflight=2, latency_ms=12.34),
            AiTargetStatus(target="q n", breaker="closed", inflight=0, latency_ms=None),
        ]
    )
    assert rows == [
        {"target": "p m", "breaker": "half-open", "inflight": 2, "latency": "12.3 ms"},
        {"target": "q n", "breaker": "closed", "inflight": 0, "latency": "\u2013"},
    ]


@pytest.mark.parametrize("dark", [False, True])
def test_charts_have_units_stacks_and_the_modes_colours(dark: bool) -> None:
    minutes = [minute(0, {"gpt": 3, "claude": 4})]
    axis = minute_axis(minutes, T0)
    series = token_series(minutes, axis, "model")
    options = minute_chart(ai_usage.TOKENS_PER_MIN, series, axis, dark=dark)
    assert options["yAxis"]["name"] == "tokens/min"
    assert "tokens/min" in options["tooltip"][":valueFormatter"]
    assert [s["stack"] for s in options["series"]] == ["total", "total"]
    assert options["legend"]["show"] is True
    text = options["textStyle"]["color"]
    assert options["xAxis"]["axisLabel"]["color"] == text
    assert (text == "#c9d1d9") is dark  # light text on a dark page
    # Half a minute of room each side: the first and last bars are drawn whole.
    assert options["xAxis"]["min"] == ai_usage.iso_time(T0 - 59 * 60 - 30)
    assert options["xAxis"]["max"] == ai_usage.iso_time(T0 + 30)
    side_by_side = minute_chart("per min", series, stacked=False)
    assert all("stack" not in s for s in side_by_side["series"])
    assert "min" not in side_by_side["xAxis"]  # no axis given: ECharts picks the span
