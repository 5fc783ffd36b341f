"""The Routes table's pure parts: rows, the search language, sorting and paging; and
the other small pure pieces of the UI (rate inputs, error wording, chart options)."""

from __future__ import annotations

from typing import Any

import pytest
from kairos_core import ConfigStatus, FieldErrorBody, MetricsHistory, Router, load_router
from kairos_ui import charts
from kairos_ui.format import error_text, step
from kairos_ui.gateway import field_message
from kairos_ui.pages.config import jwt_errors, jwt_form, local_errors, status_rows
from kairos_ui.pages.metrics import page_step
from kairos_ui.route_form import rate_inputs
from kairos_ui.route_table import (
    page_of,
    parse_query,
    route_key,
    route_name,
    route_row,
    route_tags,
    select,
)


def _route(path: str, methods: list[str], port: int = 8080, **extra: Any) -> Router:
    return load_router(
        {
            "external_path": path,
            "internal_path": path,
            "methods": methods,
            "backends": [{"host": "http://10.0.0.1", "port": port}],
            **extra,
        }
    )


def _named(route: Router, name: str | None, tags: list[str]) -> Router:
    # The route model may not know name/tags yet: set them the way it will hold them.
    return route.model_copy(update={"name": name, "tags": tags})


ROUTES = [
    _named(_route("/users/{id}", ["GET", "PUT"], 8081), "users", ["accounts", "public"]),
    _named(_route("/orders", ["POST"], 8082), "orders", ["billing"]),
    _route("/health-of-orders", ["GET"], 8081, auth_required=True),
    _named(_route("/admin/{*rest}", ["GET", "DELETE"], 9000), None, ["internal"]),
]


def _paths(routes: list[Router]) -> list[str]:
    return [r.external_path for r in routes]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("", ["/admin/{*rest}", "/health-of-orders", "/orders", "/users/{id}"]),
        ("orders", ["/health-of-orders", "/orders"]),  # a bare word: anywhere
        ("path:/orders", ["/orders"]),
        ("name:ord", ["/orders"]),
        ("tag:billing", ["/orders"]),
        ("tag:bill", []),  # tags compare whole
        ("TAG:Public", ["/users/{id}"]),  # case does not matter
        ("backend:8081", ["/health-of-orders", "/users/{id}"]),
        ("method:delete", ["/admin/{*rest}"]),
        ("method:get backend:8081", ["/health-of-orders", "/users/{id}"]),
        ("method:get jwt", ["/health-of-orders"]),  # a bare word and a qualifier
        ("color:blue", []),  # an unknown qualifier is a plain word
    ],
)
def test_search(query: str, found: list[str]) -> None:
    assert _paths(select(ROUTES, query)) == found


def test_parse_query() -> None:
    parsed = parse_query("tag:a users tag:b method:")
    assert parsed.words == ("users", "method:")
    assert parsed.qualified == {"tag": ("a", "b")}


def test_sort_by_columns() -> None:
    assert _paths(select(ROUTES, "", "path", descending=True))[0] == "/users/{id}"
    by_methods = _paths(select(ROUTES, "", "methods"))
    assert by_methods == ["/health-of-orders", "/admin/{*rest}", "/users/{id}", "/orders"]
    assert _paths(select(ROUTES, "", "auth"))[0] == "/health-of-orders"  # "jwt" < "none"
    assert _paths(select(ROUTES, "", "auth", descending=True))[-1] == "/health-of-orders"
    by_name = _paths(select(ROUTES, "", "name"))
    assert by_name[:2] == ["/orders", "/users/{id}"]  # unnamed routes last
    assert set(by_name[2:]) == {"/admin/{*rest}", "/health-of-orders"}


def test_name_and_tags_are_read_when_present() -> None:
    plain = _route("/x", ["GET"])
    assert route_name(plain) == ""
    assert route_tags(plain) == ()
    named = _named(plain, "x", ["b", "a"])
    assert route_name(named) == "x"
    assert route_tags(named) == ("a", "b")
    assert route_row(named)["tags"] == "a b"
    assert route_key(named) == "GET /x"


@pytest.mark.parametrize(
    ("count", "page", "size", "shown", "at", "pages"),
    [
        (0, 1, 25, 0, 1, 1),
        (500, 1, 25, 25, 1, 20),
        (500, 20, 25, 25, 20, 20),
        (510, 21, 25, 10, 21, 21),
        (30, 9, 25, 5, 2, 2),  # past the end: the last page
        (30, 0, 25, 25, 1, 2),
    ],
)
def test_page_of(count: int, page: int, size: int, shown: int, at: int, pages: int) -> None:
    items, current, total = page_of(list(range(count)), page, size)
    assert (len(items), current, total) == (shown, at, pages)
    if items:
        assert items[0] == (current - 1) * size


@pytest.mark.parametrize(
    ("algorithm", "values", "shown"),
    [
        ("token_bucket", (10, None, None), {"requests_per_second", "burst_size"}),
        ("fixed_window", (None, 100, 60), {"requests_per_window", "window_seconds", "burst_size"}),
        ("sliding_window", (10, None, None), {"requests_per_window", "window_seconds",
                                              "burst_size", "requests_per_second"}),
        # a token bucket given its rate per window keeps those inputs in view
        ("token_bucket", (None, 100, 60), {"requests_per_second", "burst_size",
                                           "requests_per_window", "window_seconds"}),
    ],
)  # fmt: skip
def test_rate_inputs_follow_the_algorithm(
    algorithm: str, values: tuple[float | None, float | None, float | None], shown: set[str]
) -> None:
    assert rate_inputs(algorithm, *values) == shown


def test_errors_in_the_gateways_words() -> None:
    assert error_text("[Errno 111] Connection refused") == "connection refused"
    assert error_text("HTTP 503") == "HTTP 503"
    errors = local_errors("rate_limit", {"requests_per_second": -1, "key": "ip"})
    assert [(e.path, field_message(e)) for e in errors] == [
        ("rate_limit.requests_per_second", "must be > 0 (got -1)")
    ]
    errors = local_errors("rate_limit", {"requests_per_window": 0, "window_seconds": 1})
    assert field_message(errors[0]) == "must be >= 1 (got 0)"
    assert local_errors("cors", None) == []
    assert field_message(FieldErrorBody(path="a", message="m")) == "m"


def test_an_empty_jwt_secret_is_caught_on_its_field() -> None:
    form = jwt_form(None) | {"enabled": True}
    assert [e.path for e in jwt_errors(form)] == ["jwt.secret"]
    assert jwt_errors(form | {"secret": "x" * 40}) == []
    assert jwt_errors(form | {"secret_set": True}) == []  # empty: keep the current one
    assert jwt_errors(form | {"source": "jwks_url"}) == []


def test_a_failed_reload_put_right_since_is_not_shown_as_a_failure() -> None:
    status = ConfigStatus.model_validate(
        {
            "config_version": 3,
            "etag": "e",
            "loaded_at": "t0",
            "source_path": "/etc/kairos/config.json",
            "file_changed_on_disk": False,
            "persisted": True,
            "hot_reload": True,
            "watcher_running": True,
            "routes": 1,
            "last_reload": {
                "trigger": "watcher",
                "ok": False,
                "at": "t1",
                "error": "invalid",
                "errors": [{"path": "routers[0].internal_path", "message": "field required"}],
            },
        }
    )
    rows = dict(status_rows(status))
    assert "put right since" in rows["Last reload"]
    assert not any(label.startswith("  ") for label in rows)
    still_broken = status.model_copy(update={"file_changed_on_disk": True})
    assert dict(status_rows(still_broken))["Last reload"].startswith("t1 by watcher: FAILED")


def test_chart_options_carry_units_and_follow_dark_mode() -> None:
    light = charts.line_chart("ms", [("p50", []), ("p95", [])])
    dark = charts.line_chart("ms", [("p50", []), ("p95", [])], dark=True)
    assert light["yAxis"]["name"] == "ms"
    assert "title" not in light  # drawn by the card, in page colours
    assert light["legend"]["show"]
    assert light["legend"]["bottom"] == 0
    assert light["textStyle"]["color"] != dark["textStyle"]["color"]
    grid_light = light["yAxis"]["splitLine"]["lineStyle"]["color"]
    assert dark["yAxis"]["splitLine"]["lineStyle"]["color"] != grid_light
    assert not charts.requests_chart([])["legend"]["show"]  # one series: no legend
    assert [step(s) for s in (10, 60, 240)] == ["10 s", "1 min", "4 min"]


def test_page_step_is_the_coarsest_of_the_page() -> None:
    minute = MetricsHistory(range_s=3600, step_s=60, points=[])
    assert page_step(10, {"/a": minute}, {}) == 60
    assert page_step(10, {}, {}) == 10
    assert page_step(240, {"/a": minute}) == 240
