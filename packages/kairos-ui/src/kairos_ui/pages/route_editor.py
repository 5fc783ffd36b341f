"""The route dialog of the Routes page: add or edit one route, every field checked by
the gateway (`POST /api/routes/validate`) before it is saved, errors shown on their
inputs, 412 (the configuration changed meanwhile) handled by the page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from kairos_client import KairosClientError, PreconditionFailed, ValidationFailed
from kairos_core import HTTP_METHODS, ConfigError, FieldErrorBody, Router, load_router
from kairos_core.ratelimit import RateLimitAlgorithm
from kairos_core.route import LoadBalancingStrategy
from nicegui import ui
from nicegui.elements.mixins.validation_element import ValidationElement

from ..gateway import Gateway, describe, field_message
from ..route_form import (
    JSON_FIELDS,
    BackendForm,
    FormErrors,
    RouteForm,
    field_for,
    rate_inputs,
)

__all__ = ["CLASH", "RouteEditor", "RoutesState"]

STRATEGIES: tuple[str, ...] = get_args(LoadBalancingStrategy)
ALGORITHMS: tuple[str, ...] = get_args(RateLimitAlgorithm)
#: The gateway's answer when a route for the path and a method exists already.
CLASH = "a route for this path and one of these methods exists already"


@dataclass
class RoutesState:
    routes: list[Router] = field(default_factory=list)
    etag: str | None = None
    #: Routes with no backend in rotation (their requests get 503).
    down: frozenset[str] = frozenset()


class RouteEditor:
    """The add/edit dialog for one route."""

    def __init__(
        self,
        gateway: Gateway,
        state: RoutesState,
        reload: Callable[[], Awaitable[None]],
        stale: Callable[[str], None],
    ) -> None:
        self.gateway = gateway
        self.state = state
        self.reload = reload
        self.stale = stale
        self.original: Router | None = None
        self.form = RouteForm()
        self.fields: dict[str, ValidationElement[Any]] = {}
        self.dialog = ui.dialog().props("persistent")
        with self.dialog, ui.card().classes("w-[60rem] max-w-full"):
            self.title = ui.label("").classes("text-lg font-semibold")
            self.body = ui.column().classes("w-full gap-2")
            self.general = ui.label("").classes("text-negative whitespace-pre-line")
            self.general.mark("form-error")
            with ui.row().classes("w-full justify-end"):
                ui.button("Cancel", on_click=self.dialog.close).props("flat").mark("cancel")
                ui.button("Check", on_click=self.check).props("outline").mark("check")
                ui.button("Save", on_click=self.save).mark("save")

    # -- building ------------------------------------------------------------------------

    def open(self, original: Router | None) -> None:
        self.original = original
        self.form = RouteForm() if original is None else RouteForm.from_router(original)
        self.title.text = "Add route" if original is None else f"Edit {original.external_path}"
        self.general.text = ""
        self._build()
        self.dialog.open()

    def _input(self, path: str, element: ValidationElement[Any]) -> ValidationElement[Any]:
        self.fields[path] = element
        element.mark(f"field:{path}")
        element.props(f'data-testid="field:{path}"')
        return element

    def _build(self) -> None:
        form = self.form
        self.fields = {}
        self.body.clear()
        with self.body:
            with ui.row().classes("w-full gap-3"):
                self._input(
                    "external_path",
                    ui.input("External path", placeholder="/api/users/{id}")
                    .bind_value(form, "external_path")
                    .classes("flex-1"),
                )
                self._input(
                    "internal_path",
                    ui.input("Internal path", placeholder="/users/{id}")
                    .bind_value(form, "internal_path")
                    .classes("flex-1"),
                )
            with ui.row().classes("w-full gap-3 items-center"):
                self._input(
                    "methods",
                    ui.select(list(HTTP_METHODS), label="Methods", multiple=True)
                    .bind_value(form, "methods")
                    .props("use-chips")
                    .classes("flex-1"),
                )
                self._input(
                    "load_balancing_strategy",
                    ui.select(list(STRATEGIES), label="Load balancing")
                    .bind_value(form, "load_balancing_strategy")
                    .classes("w-48"),
                )
                ui.switch("JWT auth required").bind_value(form, "auth_required").mark(
                    "field:auth_required"
                )
            ui.label("Backends").classes("font-semibold mt-2")
            self.backend_rows = ui.column().classes("w-full gap-1")
            self._build_backends()
            ui.button("Add backend", icon="add", on_click=self._add_backend).props(
                "flat dense"
            ).mark("add-backend")
            self._build_retry()
            self._build_rate_limit()
            self._build_cors()
            self._build_advanced()

    def _build_backends(self) -> None:
        self.fields = {k: v for k, v in self.fields.items() if not k.startswith("backends[")}
        self.backend_rows.clear()
        with self.backend_rows:
            for i, backend in enumerate(self.form.backends):
                with ui.row().classes("w-full gap-2 items-start"):
                    self._input(
                        f"backends[{i}].host",
                        ui.input("Host", placeholder="http://10.0.0.11")
                        .bind_value(backend, "host")
                        .classes("flex-1"),
                    )
                    self._input(
                        f"backends[{i}].port",
                        # No min/max: Quasar would clamp 70000 to 65535 without a word;
                        # the gateway's check names the bound on the field instead.
                        ui.number("Port", precision=0).bind_value(backend, "port").classes("w-28"),
                    )
                    self._input(
                        f"backends[{i}].weight",
                        ui.number("Weight", precision=0)
                        .bind_value(backend, "weight")
                        .classes("w-24"),
                    )
                    self._input(
                        f"backends[{i}].health_check_path",
                        ui.input("Health-check path", placeholder="/health")
                        .bind_value(backend, "health_check_path")
                        .classes("w-44"),
                    )
                    ui.button(icon="delete", on_click=lambda i=i: self._remove_backend(i)).props(
                        "flat round dense"
                    ).mark(f"remove-backend-{i}")

    def _add_backend(self) -> None:
        self.form.backends.append(BackendForm())
        self._build_backends()

    def _remove_backend(self, index: int) -> None:
        del self.form.backends[index]
        self._build_backends()

    def _build_retry(self) -> None:
        form = self.form
        with ui.expansion("Retries", icon="replay").classes("w-full"):
            ui.switch("Custom retry policy").bind_value(form, "retry_enabled")
            with ui.row().classes("w-full gap-2").bind_visibility_from(form, "retry_enabled"):
                for name, label in (
                    ("max_retries", "Max retries"),
                    ("initial_backoff_ms", "Initial backoff ms"),
                    ("max_backoff_ms", "Max backoff ms"),
                    ("backoff_multiplier", "Backoff multiplier"),
                ):
                    self._input(
                        f"retry_config.{name}",
                        ui.number(label).bind_value(form, name).classes("w-40"),
                    )
                self._input(
                    "retry_config.retryable_status_codes",
                    ui.input("Retry on status codes")
                    .bind_value(form, "retryable_status_codes")
                    .classes("w-56"),
                )
                ui.switch("On connection errors").bind_value(form, "retry_on_connection_error")
                ui.switch("Also non-idempotent methods").bind_value(form, "retry_non_idempotent")

    def _build_rate_limit(self) -> None:
        form = self.form
        with ui.expansion("Rate limit", icon="speed").classes("w-full"):
            self._input(
                "rate_limit",
                ui.select(
                    {
                        "inherit": "Gateway-wide limit",
                        "off": "No limit on this route",
                        "custom": "This route's own limit",
                    },
                    label="Rate limit",
                )
                .bind_value(form, "rate_limit_mode")
                .classes("w-64"),
            )
            with (
                ui.row()
                .classes("w-full gap-2")
                .bind_visibility_from(form, "rate_limit_mode", value="custom")
            ):
                self._input(
                    "rate_limit.algorithm",
                    ui.select(list(ALGORITHMS), label="Algorithm")
                    .bind_value(form, "rl_algorithm")
                    .classes("w-40"),
                )

                def shown_for(name: str) -> Callable[[str], bool]:
                    def shown(algorithm: str) -> bool:
                        values = (form.rl_requests_per_second, form.rl_requests_per_window)
                        return name in rate_inputs(algorithm, *values, form.rl_window_seconds)

                    return shown

                for name, attr, label in (
                    ("requests_per_second", "rl_requests_per_second", "Requests / s"),
                    ("burst_size", "rl_burst_size", "Burst"),
                    ("requests_per_window", "rl_requests_per_window", "Requests / window"),
                    ("window_seconds", "rl_window_seconds", "Window s"),
                ):
                    self._input(
                        f"rate_limit.{name}",
                        ui.number(label)
                        .bind_value(form, attr)
                        .bind_visibility_from(form, "rl_algorithm", backward=shown_for(name))
                        .classes("w-36"),
                    )
                self._input(
                    "rate_limit.key",
                    ui.input("Key (ip, user, route, header:X)")
                    .bind_value(form, "rl_key")
                    .classes("w-56"),
                )

    def _build_cors(self) -> None:
        form = self.form
        with ui.expansion("CORS", icon="public").classes("w-full"):
            self._input(
                "cors",
                ui.select(
                    {
                        "inherit": "Gateway-wide policy",
                        "off": "No CORS on this route",
                        "custom": "This route's own policy",
                    },
                    label="CORS",
                )
                .bind_value(form, "cors_mode")
                .classes("w-64"),
            )
            with (
                ui.row()
                .classes("w-full gap-2")
                .bind_visibility_from(form, "cors_mode", value="custom")
            ):
                for name, attr, label in (
                    ("allowed_origins", "cors_allowed_origins", "Allowed origins"),
                    ("allowed_methods", "cors_allowed_methods", "Allowed methods"),
                    ("allowed_headers", "cors_allowed_headers", "Allowed headers"),
                ):
                    self._input(
                        f"cors.{name}",
                        ui.input(label).bind_value(form, attr).classes("flex-1 min-w-48"),
                    )
                self._input(
                    "cors.max_age",
                    ui.number("Max age s").bind_value(form, "cors_max_age").classes("w-28"),
                )
                ui.switch("Allow credentials").bind_value(form, "cors_allow_credentials")

    def _build_advanced(self) -> None:
        form = self.form
        with ui.expansion("Timeouts, body size, claims, overrides", icon="tune").classes("w-full"):
            with ui.row().classes("w-full gap-2"):
                for name, label in (
                    ("connect_ms", "Connect timeout ms"),
                    ("read_ms", "Read timeout ms"),
                    ("total_ms", "Total deadline ms"),
                ):
                    self._input(
                        f"timeouts.{name}",
                        ui.number(label).bind_value(form, name).classes("w-44"),
                    )
                self._input(
                    "max_body_size",
                    ui.number("Max body bytes").bind_value(form, "max_body_size").classes("w-44"),
                )
            with ui.row().classes("w-full gap-4"):
                ui.switch("Strip Authorization").bind_value(form, "strip_authorization")
                ui.switch("Preserve Host").bind_value(form, "preserve_host")
            with ui.grid(columns=2).classes("w-full gap-2"):
                for name in JSON_FIELDS:
                    self._input(
                        name,
                        ui.textarea(f"{name} (JSON object)")
                        .bind_value(form.json_text, name)
                        .props("autogrow input-class=font-mono"),
                    )

    # -- checking and saving -------------------------------------------------------------

    def _clear_errors(self) -> None:
        for element in self.fields.values():
            element.error = None
        self.general.text = ""

    def _show_errors(self, errors: list[FieldErrorBody]) -> None:
        general: list[str] = []
        for error in errors:
            target = field_for(error.path, frozenset(self.fields))
            if target is None:
                general.append(f"{error.path or 'route'}: {field_message(error)}")
                continue
            element = self.fields[target]
            text = field_message(error)
            message = text if target == error.path else f"{error.path}: {text}"
            element.error = message if not element.error else f"{element.error}; {message}"
        self.general.text = "\n".join(general)

    async def _errors(self) -> tuple[dict[str, Any] | None, list[FieldErrorBody]]:
        """The route's data and what is wrong with it (nothing is saved)."""
        try:
            data = self.form.to_data()
        except FormErrors as exc:
            return None, [FieldErrorBody(path=p, message=m) for p, m in exc.errors.items()]
        result = await self.gateway.client.validate_route(data)
        errors = result.errors
        original = self.original
        if original is not None and [e.message for e in errors] == [CLASH]:
            # Editing: the clash is with the route itself; check the fields on their own.
            try:
                load_router(data)
                errors = []
            except ConfigError as exc:
                errors = [FieldErrorBody.model_validate(e.as_dict()) for e in exc.errors]
        return data, errors

    async def check(self) -> bool:
        """Validate with the gateway and show errors on their fields; True: valid."""
        self._clear_errors()
        try:
            _, errors = await self._errors()
        except KairosClientError as exc:
            self.general.text = describe(exc, self.gateway.url)
            return False
        self._show_errors(errors)
        if not errors:
            ui.notify("The route is valid", type="positive")
        return not errors

    async def save(self) -> None:
        self._clear_errors()
        client = self.gateway.client
        original = self.original
        try:
            data, errors = await self._errors()
            if errors or data is None:
                self._show_errors(errors)
                return
            if original is None:
                await client.create_route(data, if_match=self.state.etag)
            else:
                await client.update_route(
                    original.external_path,
                    data,
                    method=original.methods[0],
                    if_match=self.state.etag,
                )
        except ValidationFailed as exc:
            self._show_errors(exc.errors)
            return
        except PreconditionFailed:
            self.stale("Someone else changed the configuration while you were editing.")
            return
        except KairosClientError as exc:
            self.general.text = describe(exc, self.gateway.url)
            return
        self.dialog.close()
        ui.notify(f"Saved {data['external_path']}: live now", type="positive")
        await self.reload()
