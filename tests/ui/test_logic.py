"""The UI's pure parts: settings, the route form, error placement, formatting, chart series."""

from __future__ import annotations

import pytest
from kairos_core import Router, load_router
from kairos_ui.auth import safe_target
from kairos_ui.format import DASH, duration, ms, percent
from kairos_ui.pages.config import jwt_data, jwt_form
from kairos_ui.pages.metrics import label_series
from kairos_ui.route_form import FormErrors, RouteForm, field_for
from kairos_ui.settings import SettingsError, UiSettings, is_loopback

FULL_ROUTE = {
    "name": "api",
    "tags": ["public", "team:web"],
    "external_path": "/api/{*rest}",
    "internal_path": "/v1/{*rest}",
    "methods": ["GET", "POST"],
    "auth_required": True,
    "backends": [
        {"host": "http://a", "port": 80, "weight": 2, "health_check_path": "/health"},
        {"host": "https://b", "port": 443, "tls_verify": False},
    ],
    "load_balancing_strategy": "weighted",
    "retry_config": {"max_retries": 2, "budget_ratio": 0.5},
    "timeouts": {"read_ms": 900},
    "required_claims": {"role": ["admin"]},
    "forward_claims": {"sub": "X-User"},
    "strip_authorization": True,
    "rate_limit": {"requests_per_window": 100, "window_seconds": 60, "key": "user"},
    "cors": None,
    "max_body_size": 1024,
    "circuit_breaker": {"failure_threshold": 3},
    "path_params": "refuse",
    "allow_encoded_slash": True,
}


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"KAIROS_UI_HOST": "0.0.0.0"}, "without a login"),
        ({"KAIROS_UI_HOST": "10.1.2.3"}, "KAIROS_UI_PASSWORD"),
        ({"KAIROS_UI_PORT": "http"}, "KAIROS_UI_PORT"),
        ({"KAIROS_UI_PORT": "70000"}, "KAIROS_UI_PORT"),
        ({"KAIROS_GATEWAY_URL": "ftp://x"}, "KAIROS_GATEWAY_URL"),
        ({"KAIROS_UI_POLL_INTERVAL": "0"}, "KAIROS_UI_POLL_INTERVAL"),
    ],
)
def test_settings_refused(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        UiSettings.from_env(env)


def test_settings_defaults_and_public_with_password() -> None:
    default = UiSettings.from_env({})
    assert (default.host, default.port, default.gateway_url) == (
        "127.0.0.1",
        3000,
        "http://localhost:5900",
    )
    assert not default.login_required
    public = UiSettings.from_env(
        {"KAIROS_UI_HOST": "0.0.0.0", "KAIROS_UI_PASSWORD": "zebra-horse-77"}
    )
    assert public.login_required
    assert "zebra-horse-77" not in repr(public)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("a.b", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_route_form_round_trip_keeps_every_setting() -> None:
    router = load_router(FULL_ROUTE)
    data = RouteForm.from_router(router).to_data()
    again = Router.model_validate(data)
    assert again == router
    assert again.opts_out_of("cors")
    assert data["retry_config"]["budget_ratio"] == 0.5  # kept though it has no input


def test_route_form_reports_unparsable_inputs() -> None:
    form = RouteForm(external_path="/a", internal_path="/a")
    form.json_text["forward_claims"] = "[1, 2]"
    form.retry_enabled = True
    form.retryable_status_codes = "502, five"
    with pytest.raises(FormErrors) as caught:
        form.to_data()
    assert set(caught.value.errors) == {"forward_claims", "retry_config.retryable_status_codes"}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("backends[0].port", "backends[0].port"),
        ("methods[1]", "methods"),
        ("cors.allowed_origins[0]", "cors.allowed_origins"),
        ("retry_config.budget_ratio", None),
        ("", None),
    ],
)
def test_field_for(path: str, field: str | None) -> None:
    known = {"backends[0].port", "methods", "cors.allowed_origins", "external_path"}
    assert field_for(path, known) == field


def test_jwt_secret_is_write_only() -> None:
    from kairos_core import JwtConfig

    current = JwtConfig.model_validate({"secret": "***"}, context={"redacted": True})
    form = jwt_form(current)
    assert form["secret"] == ""
    assert form["secret_set"]
    assert jwt_data(form)["secret"] == "***"  # "keep the current one"
    form["secret"] = "n" * 40
    assert jwt_data(form)["secret"] == "n" * 40


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/routes", "/routes"), ("//evil.example", "/"), ("https://x", "/"), (None, "/")],
)
def test_safe_login_target(target: str | None, safe: str) -> None:
    assert safe_target(target) == safe


def test_formatting() -> None:
    assert percent(None) == DASH
    assert percent(0.8312) == "83.1 %"
    assert ms(1.5) == "1.5 ms"
    assert ms(2500) == "2.50 s"
    assert duration(3 * 86400 + 7200) == "3 d 2 h"
    assert duration(65) == "1 min 5 s"


def test_label_series_from_the_gateways_history() -> None:
    from kairos_core import HistoryPoint, Latency

    def point(at: str, requests: int, errors: int, p95: float | None) -> HistoryPoint:
        return HistoryPoint(
            timestamp=at,
            requests=requests,
            requests_per_second=requests / 60,
            client_errors=errors,
            server_errors=0,
            error_rate=None if requests == 0 else errors / requests,
            latency_ms=Latency(p95=p95),
        )

    histories = {"/a": [point("t1", 60, 6, 3.0), point("t2", 0, 0, None)], "/b": []}
    assert label_series(histories, "rps") == [("/a", [["t1", 1.0], ["t2", 0.0]]), ("/b", [])]
    assert label_series(histories, "p95")[0][1] == [["t1", 3.0], ["t2", None]]
    assert label_series(histories, "errors")[0][1] == [["t1", 10.0], ["t2", None]]
