"""Configuration (``/config``): JWT, rate limiting and CORS editors, the reload button
and the config status with the last reload's error.

Secrets are write-only: the JWT secret input is always empty, and leaving it empty
keeps the current secret (the gateway's ``"***"`` placeholder is sent back). A Redis
URL is only ever shown with its password masked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from kairos_client import KairosClientError, PreconditionFailed, ValidationFailed, Versioned
from kairos_core import (
    ConfigError,
    ConfigStatus,
    CorsConfig,
    FieldErrorBody,
    JwtConfig,
    RateLimitConfig,
    load_config,
)
from kairos_core.auth import MIN_SECRET_BYTES, REDACTED, JwtAlgorithm
from kairos_core.ratelimit import RateLimitAlgorithm
from nicegui import ui
from nicegui.elements.mixins.disableable_element import DisableableElement
from nicegui.elements.mixins.validation_element import ValidationElement

from .. import live
from ..gateway import Gateway, describe, field_message, is_outage
from ..layout import Banner, frame
from ..route_form import field_for, rate_inputs
from ..settings import UiSettings

__all__ = [
    "cors_data",
    "jwt_data",
    "jwt_errors",
    "local_errors",
    "rate_limit_data",
    "register",
    "status_rows",
]

JWT_ALGORITHMS: tuple[str, ...] = get_args(JwtAlgorithm)
ALGORITHMS: tuple[str, ...] = get_args(RateLimitAlgorithm)


def _words(text: str | None) -> list[str]:
    return [w for w in (text or "").replace(",", " ").split() if w]


def _num(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# -- form <-> section data (pure) ------------------------------------------------------


def jwt_form(jwt: JwtConfig | None) -> dict[str, Any]:
    """The JWT editor's inputs; the secret input always starts empty (write-only)."""
    if jwt is None:
        return {"enabled": False, "source": "secret", "secret": "", "secret_set": False,
                "public_key": "", "jwks_url": "", "algorithms": ["HS256"], "issuer": "",
                "audience": "", "required_claims": "", "leeway_s": 60,
                "forward_claims": "", "keep": {}}  # fmt: skip
    data = jwt.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True})
    source = "jwks_url" if jwt.jwks_url else ("public_key" if jwt.public_key else "secret")
    audience = jwt.audience
    return {
        "enabled": True,
        "source": source,
        "secret": "",
        "secret_set": jwt.secret is not None,
        "public_key": jwt.public_key or "",
        "jwks_url": jwt.jwks_url or "",
        "algorithms": list(jwt.algorithms),
        "issuer": jwt.issuer or "",
        "audience": ", ".join(audience) if isinstance(audience, list) else (audience or ""),
        "required_claims": ", ".join(jwt.required_claims),
        "leeway_s": jwt.leeway_s,
        "forward_claims": json.dumps(jwt.forward_claims) if jwt.forward_claims else "",
        "keep": {
            k: v for k, v in data.items() if k.startswith(("jwks_", "cache_")) and k != "jwks_url"
        },
    }


def jwt_data(form: dict[str, Any]) -> dict[str, Any] | None:
    """JSON for ``PUT /api/config/jwt``; None removes the section."""
    if not form["enabled"]:
        return None
    data: dict[str, Any] = dict(form["keep"])
    source = form["source"]
    if source == "secret":
        # Empty input: keep the current secret (the gateway restores "***").
        data["secret"] = form["secret"] or (REDACTED if form["secret_set"] else "")
    elif source == "public_key":
        data["public_key"] = form["public_key"]
    else:
        data["jwks_url"] = form["jwks_url"].strip()
    data["algorithms"] = list(form["algorithms"])
    if form["issuer"].strip():
        data["issuer"] = form["issuer"].strip()
    audience = _words(form["audience"])
    if audience:
        data["audience"] = audience[0] if len(audience) == 1 else audience
    data["required_claims"] = _words(form["required_claims"])
    data["leeway_s"] = _num(form["leeway_s"])
    text = (form["forward_claims"] or "").strip()
    if text:
        try:
            data["forward_claims"] = json.loads(text)
        except ValueError:
            data["forward_claims"] = text  # the gateway names the field and the problem
    return data


def rate_limit_form(limit: RateLimitConfig | None) -> dict[str, Any]:
    if limit is None:
        return {"enabled": False, "algorithm": "token_bucket", "requests_per_second": 100,
                "burst_size": None, "requests_per_window": None, "window_seconds": None,
                "key": "ip", "backend": "memory", "redis_url": "", "keep": {}}  # fmt: skip
    data = limit.model_dump(mode="json", exclude_none=True)  # redis_url password masked
    return {
        "enabled": True,
        "algorithm": limit.algorithm,
        "requests_per_second": limit.requests_per_second,
        "burst_size": limit.burst_size,
        "requests_per_window": limit.requests_per_window,
        "window_seconds": limit.window_seconds,
        "key": limit.key,
        "backend": limit.backend,
        "redis_url": data.get("redis_url", ""),
        "keep": {
            k: v
            for k, v in data.items()
            if k in ("key_prefix", "name", "legacy_headers", "on_redis_error", "redis_timeout_ms")
        },
    }


def rate_limit_data(form: dict[str, Any]) -> dict[str, Any] | None:
    if not form["enabled"]:
        return None
    data: dict[str, Any] = dict(form["keep"])
    data.update(algorithm=form["algorithm"], key=(form["key"] or "ip").strip())
    data["backend"] = form["backend"]
    for name in ("requests_per_second", "burst_size", "requests_per_window", "window_seconds"):
        if form[name] is not None:
            data[name] = _num(form[name])
    if form["backend"] == "redis" or form["redis_url"]:
        data["redis_url"] = form["redis_url"].strip() or None
    return data


def cors_form(cors: CorsConfig | None) -> dict[str, Any]:
    if cors is None:
        return {"enabled": False, "allowed_origins": "",
                "allowed_methods": "GET, HEAD, POST, PUT, PATCH, DELETE", "allowed_headers": "",
                "exposed_headers": "", "allow_credentials": False, "max_age": 600}  # fmt: skip
    return {
        "enabled": True,
        "allowed_origins": ", ".join(cors.allowed_origins),
        "allowed_methods": ", ".join(cors.allowed_methods),
        "allowed_headers": ", ".join(cors.allowed_headers),
        "exposed_headers": ", ".join(cors.exposed_headers),
        "allow_credentials": cors.allow_credentials,
        "max_age": cors.max_age,
    }


def cors_data(form: dict[str, Any]) -> dict[str, Any] | None:
    if not form["enabled"]:
        return None
    return {
        "allowed_origins": _words(form["allowed_origins"]),
        "allowed_methods": _words(form["allowed_methods"]),
        "allowed_headers": _words(form["allowed_headers"]),
        "exposed_headers": _words(form["exposed_headers"]),
        "allow_credentials": bool(form["allow_credentials"]),
        "max_age": _num(form["max_age"]),
    }


def local_errors(name: str, data: dict[str, Any] | None) -> list[FieldErrorBody]:
    """Field errors the gateway would report for section ``name`` holding ``data``,
    found without asking it: the same check (`load_config`) and so the same words
    (``must be > 0``, not pydantic's ``Input should be greater than 0``)."""
    if data is None:
        return []
    try:
        load_config({"version": 1, "routers": [], name: data}, redacted=True)
    except ConfigError as exc:
        return [FieldErrorBody.model_validate(error.as_dict()) for error in exc.errors]
    return []


def jwt_errors(form: dict[str, Any]) -> list[FieldErrorBody]:
    """What the JWT editor catches itself: a shared secret chosen but none typed and
    none set (the gateway would store an empty key)."""
    typed_or_kept = form["secret"] or form["secret_set"]
    if form["enabled"] and form["source"] == "secret" and not typed_or_kept:
        return [
            FieldErrorBody(
                path="jwt.secret",
                message=f"type a secret of at least {MIN_SECRET_BYTES} bytes "
                "(e.g. the output of openssl rand -hex 32)",
            )
        ]
    return []


def status_rows(status: ConfigStatus) -> list[tuple[str, str]]:
    """(label, value) lines of the config status card."""
    rows = [
        ("Config version", str(status.config_version)),
        ("ETag", status.etag),
        ("Loaded at", status.loaded_at),
        ("File", status.source_path or "none: changes are kept in memory only"),
        ("Saved to the file", "yes" if status.persisted else "no"),
        ("File changed on disk", "yes: reload it" if status.file_changed_on_disk else "no"),
        ("Hot reload", "on" if status.hot_reload else "off"),
        ("File watcher", "running" if status.watcher_running else "stopped"),
        ("Routes", str(status.routes)),
    ]
    last = status.last_reload
    if last is None:
        rows.append(("Last reload", "none since start-up"))
    elif not last.ok and status.source_path and not status.file_changed_on_disk:
        # The file already matches the running configuration again: the failure is
        # history (the gateway says so itself once its watcher has seen the file).
        rows.append(
            (
                "Last reload",
                f"{last.at} by {last.trigger}: failed; the file has been put right since "
                "(it matches the running configuration)",
            )
        )
    else:
        outcome = "ok" if last.ok else f"FAILED: {last.error or 'invalid'}"
        rows.append(("Last reload", f"{last.at} by {last.trigger}: {outcome}"))
        rows.extend((f"  {e.path or 'config'}", e.message) for e in last.errors)
    return rows


# -- the page ----------------------------------------------------------------------------


class _Section:
    """One editor card: load, check locally, save with If-Match, show field errors."""

    def __init__(
        self,
        title: str,
        name: str,
        to_data: Callable[[dict[str, Any]], dict[str, Any] | None],
        to_form: Callable[[Any], dict[str, Any]],
        load: Callable[[], Awaitable[Versioned[Any]]],
        save: Callable[..., Awaitable[Versioned[Any]]],
        build: Callable[[_Section], None],
        gateway: Gateway,
        banner: Banner,
        own_errors: Callable[[dict[str, Any]], list[FieldErrorBody]] = lambda form: [],
        section_field: Callable[[dict[str, Any]], str | None] = lambda form: None,
    ) -> None:
        self.title, self.name, self.build = title, name, build
        #: Errors the form finds before any check of the data (`jwt_errors`).
        self.own_errors = own_errors
        #: The input an error about the section as a whole belongs on (None: below).
        self.section_field = section_field
        self.to_data, self.to_form = to_data, to_form
        self._load, self._save = load, save
        self.gateway, self.banner = gateway, banner
        self.form: dict[str, Any] = to_form(None)
        self.etag: str | None = None
        self.fields: dict[str, ValidationElement[Any]] = {}
        with ui.card().classes("w-full"):
            with ui.row().classes("w-full items-center"):
                ui.label(title).classes("text-lg font-semibold")
                ui.space()
                self.save_button = ui.button("Save", icon="save", on_click=self.save)
                self.save_button.mark(f"save-{name}")
            self.body = ui.column().classes("w-full gap-2")
            with ui.row().classes("items-center gap-2"):
                self.general = ui.label("").classes("text-negative").mark(f"error-{name}")
                self.stale = ui.button("Reload", icon="refresh", on_click=self.reload)
                self.stale.props("flat dense").mark(f"reload-{name}")
                self.stale.visible = False
        #: False for a token whose role may not change settings: read-only fields.
        self.editable = True

    def read_only(self) -> None:
        """Show the section without a way to change it (the role may not)."""
        self.editable = False
        self.save_button.delete()
        disable_inputs(self.body)

    def field(self, path: str, element: ValidationElement[Any]) -> ValidationElement[Any]:
        self.fields[path] = element
        element.mark(f"field:{self.name}.{path}")
        return element

    def show_errors(self, errors: list[FieldErrorBody]) -> None:
        general = []
        for error in errors:
            path = error.path.removeprefix(f"{self.name}.").removeprefix(self.name)
            target = field_for(path, frozenset(self.fields))
            if target is None and path == "":
                target = self.section_field(self.form)
            if target is None or target not in self.fields:
                general.append(f"{error.path or self.name}: {field_message(error)}")
            else:
                self.fields[target].error = field_message(error)
        self.general.text = "; ".join(general)

    def clear_errors(self) -> None:
        for element in self.fields.values():
            element.error = None
        self.general.text = ""

    async def reload(self) -> None:
        try:
            current = await self._load()
        except KairosClientError as exc:
            if is_outage(exc):
                self.banner.show(describe(exc, self.gateway.url))
            else:
                self.general.text = describe(exc, self.gateway.url)
            return
        self.etag = current.etag
        self.form = self.to_form(current.value)
        self.fields = {}
        self.body.clear()
        with self.body:
            self.build(self)
        if not self.editable:
            disable_inputs(self.body)
        self.clear_errors()
        self.stale.visible = False

    async def save(self) -> None:
        self.clear_errors()
        data = self.to_data(self.form)
        errors = self.own_errors(self.form) or local_errors(self.name, data)
        if errors:
            self.show_errors(errors)
            return
        try:
            saved = await self._save(data, if_match=self.etag)
        except ValidationFailed as exc:
            self.show_errors(exc.errors)
            return
        except PreconditionFailed:
            self.general.text = (
                "Someone else changed the configuration in the meantime: "
                "reload this section and make the change again."
            )
            self.stale.visible = True
            return
        except KairosClientError as exc:
            self.general.text = describe(exc, self.gateway.url)
            return
        self.etag = saved.etag
        ui.notify(f"{self.title} saved: live now", type="positive")


def _build_jwt(section: _Section) -> None:
    form = section.form
    ui.switch("Verify JWTs (needed by routes with auth)").bind_value(form, "enabled")
    with ui.column().classes("w-full gap-2").bind_visibility_from(form, "enabled"):
        ui.toggle(
            {"secret": "Shared secret", "public_key": "Public key", "jwks_url": "JWKS URL"}
        ).bind_value(form, "source")
        hint = "set: type to replace it" if form["secret_set"] else "not set"
        section.field(
            "secret",
            ui.input("Secret (write-only)", password=True, placeholder=hint)
            .bind_value(form, "secret")
            .bind_visibility_from(form, "source", value="secret")
            .classes("w-full")
            .props("autocomplete=new-password"),
        )
        section.field(
            "public_key",
            ui.textarea("Public key (PEM)")
            .bind_value(form, "public_key")
            .bind_visibility_from(form, "source", value="public_key")
            .classes("w-full")
            .props("input-class=font-mono"),
        )
        section.field(
            "jwks_url",
            ui.input("JWKS URL")
            .bind_value(form, "jwks_url")
            .bind_visibility_from(form, "source", value="jwks_url")
            .classes("w-full"),
        )
        with ui.row().classes("w-full gap-2"):
            section.field(
                "algorithms",
                ui.select(list(JWT_ALGORITHMS), label="Algorithms", multiple=True)
                .bind_value(form, "algorithms")
                .props("use-chips")
                .classes("w-64"),
            )
            section.field("issuer", ui.input("Issuer").bind_value(form, "issuer").classes("flex-1"))
            section.field(
                "audience",
                ui.input("Audience (comma-separated)")
                .bind_value(form, "audience")
                .classes("flex-1"),
            )
        with ui.row().classes("w-full gap-2"):
            section.field(
                "required_claims",
                ui.input("Required claims").bind_value(form, "required_claims").classes("flex-1"),
            )
            section.field(
                "leeway_s", ui.number("Leeway s").bind_value(form, "leeway_s").classes("w-28")
            )
            section.field(
                "forward_claims",
                ui.input("Forward claims (JSON: claim -> header)")
                .bind_value(form, "forward_claims")
                .classes("flex-1"),
            )


def _build_rate_limit(section: _Section) -> None:
    form = section.form
    ui.switch("Gateway-wide rate limit").bind_value(form, "enabled")
    with ui.row().classes("w-full gap-2").bind_visibility_from(form, "enabled"):
        section.field(
            "algorithm",
            ui.select(list(ALGORITHMS), label="Algorithm")
            .bind_value(form, "algorithm")
            .classes("w-40"),
        )

        def shown_for(name: str) -> Callable[[str], bool]:
            def shown(algorithm: str) -> bool:
                values = (form["requests_per_second"], form["requests_per_window"])
                return name in rate_inputs(algorithm, *values, form["window_seconds"])

            return shown

        for name, label in (
            ("requests_per_second", "Requests / s"),
            ("burst_size", "Burst"),
            ("requests_per_window", "Requests / window"),
            ("window_seconds", "Window s"),
        ):
            section.field(
                name,
                ui.number(label)
                .bind_value(form, name)
                .bind_visibility_from(form, "algorithm", backward=shown_for(name))
                .classes("w-36"),
            )
        section.field(
            "key",
            ui.input("Key (ip, user, route, header:X)").bind_value(form, "key").classes("w-56"),
        )
        section.field(
            "backend",
            ui.select(["memory", "redis"], label="Counters in")
            .bind_value(form, "backend")
            .classes("w-32"),
        )
        section.field(
            "redis_url",
            ui.input("Redis URL (password never shown)")
            .bind_value(form, "redis_url")
            .classes("flex-1 min-w-64"),
        )


def _build_cors(section: _Section) -> None:
    form = section.form
    ui.switch("Gateway-wide CORS policy").bind_value(form, "enabled")
    with ui.row().classes("w-full gap-2").bind_visibility_from(form, "enabled"):
        for name, label in (
            ("allowed_origins", "Allowed origins"),
            ("allowed_methods", "Allowed methods"),
            ("allowed_headers", "Allowed headers (empty: as asked)"),
            ("exposed_headers", "Exposed headers"),
        ):
            section.field(name, ui.input(label).bind_value(form, name).classes("flex-1 min-w-64"))
        section.field("max_age", ui.number("Max age s").bind_value(form, "max_age").classes("w-28"))
        ui.switch("Allow credentials").bind_value(form, "allow_credentials")


def disable_inputs(container: ui.element) -> None:
    """Turn every input under ``container`` off (shown, not editable)."""
    for element in container.descendants():
        if isinstance(element, DisableableElement):
            element.disable()


def register(settings: UiSettings, gateway: Gateway) -> None:
    @ui.page("/config", title="Kairos · configuration")
    def config_page() -> None:
        client = gateway.client
        with frame(settings, "/config") as banner:
            with ui.row().classes("w-full items-center"):
                ui.label("Configuration").classes("text-2xl font-semibold")
                ui.space()
                if gateway.allows("operator"):
                    ui.button("Reload from file", icon="sync", on_click=lambda: reload_file()).mark(
                        "reload-config"
                    )
            with ui.row().classes("w-full gap-4 items-start no-wrap max-lg:flex-wrap"):
                with ui.column().classes("flex-[2] min-w-80 gap-4"):
                    jwt = _Section(
                        "JWT authentication", "jwt", jwt_data, jwt_form,
                        client.get_jwt_config, client.update_jwt_config, _build_jwt, gateway,
                        banner, own_errors=jwt_errors,
                        # "give exactly one of secret, public_key or jwks_url": on the key.
                        section_field=lambda form: form["source"],
                    )  # fmt: skip
                    limit = _Section(
                        "Rate limiting", "rate_limit", rate_limit_data,
                        rate_limit_form, client.get_rate_limit_config,
                        client.update_rate_limit_config, _build_rate_limit, gateway, banner,
                    )  # fmt: skip
                    cors = _Section(
                        "CORS", "cors", cors_data, cors_form,
                        client.get_cors_config, client.update_cors_config, _build_cors, gateway,
                        banner,
                    )  # fmt: skip
                if not gateway.allows("admin"):  # authentication and limits: admin only
                    for section in (jwt, limit, cors):
                        section.read_only()
                with ui.card().classes("flex-1 min-w-72"):
                    ui.label("Status").classes("text-lg font-semibold")
                    status_box = ui.column().classes("w-full gap-1")

        async def show_status() -> None:
            try:
                status = await client.config_status()
            except KairosClientError as exc:
                banner.show(describe(exc, gateway.url))
                return
            banner.clear()
            status_box.clear()
            with status_box, ui.grid(columns="auto 1fr").classes("gap-x-3 gap-y-1 text-sm"):
                for label, value in status_rows(status):
                    ui.label(label).classes("opacity-70")
                    failed = value.startswith("FAILED") or label.startswith("  ")
                    ui.label(value).classes("break-all" + (" text-negative" if failed else ""))

        async def reload_file() -> None:
            try:
                await client.reload()
                ui.notify("Reloaded the config file", type="positive")
            except ValidationFailed as exc:
                ui.notify(
                    f"The file is invalid; the running config keeps serving. {exc.errors[0].path}: "
                    f"{field_message(exc.errors[0])}"
                    if exc.errors
                    else "The file is invalid",
                    type="negative",
                    multi_line=True,
                )
            except KairosClientError as exc:
                ui.notify(describe(exc, gateway.url), type="negative")
            await load_all()

        async def load_all() -> None:
            await jwt.reload()
            await limit.reload()
            await cors.reload()
            await show_status()

        ui.timer(0, load_all, once=True)
        ui.timer(max(settings.poll_interval_s, 5.0), show_status)
        # Only the status: a refresh of the editors would drop what is being typed.
        live.follow(gateway, on_config=show_status)
