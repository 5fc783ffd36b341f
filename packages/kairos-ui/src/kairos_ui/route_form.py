"""The route editor's state, as plain data: a `Router` in, JSON for the API out.

The dialog (``pages/routes.py``) binds its inputs to a `RouteForm`; this module knows
how the fields map to the route's JSON and where a validation error's path belongs.
Settings the form has no input for (a backend's TLS options, a retry budget, Redis
options of a rate limit, ...) are kept from the route being edited, never dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from kairos_core import Backend, Router

__all__ = [
    "JSON_FIELDS",
    "BackendForm",
    "FormErrors",
    "RouteForm",
    "field_for",
    "rate_inputs",
]

#: Route settings edited as a JSON object (empty input: not set).
JSON_FIELDS = ("required_claims", "forward_claims", "circuit_breaker", "health_check")
_INDEX = re.compile(r"\[\d+\]$")
#: Route settings the form has no input for, kept as the route set them.
_KEPT_AS_SET = ("name", "tags", "path_params", "allow_encoded_slash")


class FormErrors(Exception):
    """Inputs that could not even be turned into JSON: ``errors`` maps path -> message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _int(value: float | int | None) -> int | None:
    """A NiceGUI number input's value (a float, or None when empty) as an int."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value  # type: ignore[return-value]


def _words(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", text.strip()) if part]


def _backend_extra(backend: Backend) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if not backend.tls_verify:
        extra["tls_verify"] = False
    if backend.tls_ca_file is not None:
        extra["tls_ca_file"] = backend.tls_ca_file
    return extra


@dataclass
class BackendForm:
    host: str = "http://127.0.0.1"
    port: float | None = None
    weight: float | None = 1
    health_check_path: str = ""
    #: Backend settings without an input (tls_verify, tls_ca_file).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {**self.extra, "host": self.host.strip(), "port": _int(self.port)}
        if self.weight is not None:
            data["weight"] = _int(self.weight)
        if self.health_check_path.strip():
            data["health_check_path"] = self.health_check_path.strip()
        return data


@dataclass
class RouteForm:
    """Every input of the route dialog."""

    external_path: str = ""
    internal_path: str = ""
    methods: list[str] = field(default_factory=lambda: ["GET"])
    backends: list[BackendForm] = field(default_factory=lambda: [BackendForm()])
    load_balancing_strategy: str = "round_robin"
    auth_required: bool = False
    strip_authorization: bool = False
    preserve_host: bool = False
    max_body_size: float | None = None
    # timeouts (ms; empty: the gateway-wide value)
    connect_ms: float | None = None
    read_ms: float | None = None
    total_ms: float | None = None
    # retry_config
    retry_enabled: bool = False
    max_retries: float | None = 3
    initial_backoff_ms: float | None = 100
    max_backoff_ms: float | None = 5000
    backoff_multiplier: float | None = 2.0
    retryable_status_codes: str = "502, 503, 504"
    retry_on_connection_error: bool = True
    retry_non_idempotent: bool = False
    # rate_limit override: inherit (absent), off (null), custom (an object)
    rate_limit_mode: str = "inherit"
    rl_algorithm: str = "token_bucket"
    rl_requests_per_second: float | None = 10
    rl_burst_size: float | None = None
    rl_requests_per_window: float | None = None
    rl_window_seconds: float | None = None
    rl_key: str = "ip"
    # cors override: inherit (absent), off (null), custom (an object)
    cors_mode: str = "inherit"
    cors_allowed_origins: str = ""
    cors_allowed_methods: str = "GET, HEAD, POST, PUT, PATCH, DELETE"
    cors_allowed_headers: str = ""
    cors_allow_credentials: bool = False
    cors_max_age: float | None = 600
    #: JSON text of the object-valued settings in `JSON_FIELDS`.
    json_text: dict[str, str] = field(default_factory=lambda: dict.fromkeys(JSON_FIELDS, ""))
    #: Kept as they were: settings of the original route without an input.
    keep: dict[str, Any] = field(default_factory=dict)

    # -- in ------------------------------------------------------------------------------

    @classmethod
    def from_router(cls, router: Router) -> RouteForm:
        data: dict[str, Any] = router.model_dump(
            mode="json", exclude_none=True, context={"reveal_secrets": True}
        )
        form = cls(
            external_path=router.external_path,
            internal_path=router.internal_path,
            methods=list(router.methods),
            backends=[
                BackendForm(
                    host=b.host,
                    port=b.port,
                    weight=b.weight,
                    health_check_path=b.health_check_path or "",
                    extra=_backend_extra(b),
                )
                for b in router.backends
            ],
            load_balancing_strategy=router.load_balancing_strategy,
            auth_required=router.auth_required,
            strip_authorization=router.strip_authorization,
            preserve_host=router.preserve_host,
            max_body_size=router.max_body_size,
        )
        if router.timeouts is not None:
            form.connect_ms = router.timeouts.connect_ms
            form.read_ms = router.timeouts.read_ms
            form.total_ms = router.timeouts.total_ms
        if (retry := router.retry_config) is not None:
            form.retry_enabled = True
            form.max_retries = retry.max_retries
            form.initial_backoff_ms = retry.initial_backoff_ms
            form.max_backoff_ms = retry.max_backoff_ms
            form.backoff_multiplier = retry.backoff_multiplier
            form.retryable_status_codes = ", ".join(map(str, retry.retryable_status_codes))
            form.retry_on_connection_error = retry.retry_on_connection_error
            form.retry_non_idempotent = retry.retry_non_idempotent
            form.keep["retry_config"] = data["retry_config"]
        if router.opts_out_of("rate_limit"):
            form.rate_limit_mode = "off"
        elif (limit := router.rate_limit) is not None:
            form.rate_limit_mode = "custom"
            form.rl_algorithm = limit.algorithm
            form.rl_requests_per_second = limit.requests_per_second
            form.rl_burst_size = limit.burst_size
            form.rl_requests_per_window = limit.requests_per_window
            form.rl_window_seconds = limit.window_seconds
            form.rl_key = limit.key
            form.keep["rate_limit"] = data["rate_limit"]
        if router.opts_out_of("cors"):
            form.cors_mode = "off"
        elif (cors := router.cors) is not None:
            form.cors_mode = "custom"
            form.cors_allowed_origins = ", ".join(cors.allowed_origins)
            form.cors_allowed_methods = ", ".join(cors.allowed_methods)
            form.cors_allowed_headers = ", ".join(cors.allowed_headers)
            form.cors_allow_credentials = cors.allow_credentials
            form.cors_max_age = cors.max_age
            form.keep["cors"] = data["cors"]
        if router.plugins is not None:
            form.keep["plugins"] = data["plugins"]  # no input for them: kept as they are
        for name in _KEPT_AS_SET:  # no input for them either
            if name in router.model_fields_set:
                form.keep[name] = data[name]
        for name in JSON_FIELDS:
            if name in data:
                form.json_text[name] = json.dumps(data[name], indent=2)
        return form

    # -- out -----------------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """The route as JSON data for the API; `FormErrors` for unparsable inputs (JSON
        objects, status code lists). Everything else is checked by the gateway."""
        errors: dict[str, str] = {}
        data: dict[str, Any] = {
            "external_path": self.external_path.strip(),
            "internal_path": self.internal_path.strip(),
            "methods": list(self.methods),
            "backends": [b.to_data() for b in self.backends],
            "load_balancing_strategy": self.load_balancing_strategy,
            "auth_required": self.auth_required,
        }
        if self.strip_authorization:
            data["strip_authorization"] = True
        if self.preserve_host:
            data["preserve_host"] = True
        if self.max_body_size is not None:
            data["max_body_size"] = _int(self.max_body_size)
        timeouts = {
            name: _int(value)
            for name, value in (
                ("connect_ms", self.connect_ms),
                ("read_ms", self.read_ms),
                ("total_ms", self.total_ms),
            )
            if value is not None
        }
        if timeouts:
            data["timeouts"] = timeouts
        if self.retry_enabled:
            codes: list[int] = []
            for word in _words(self.retryable_status_codes):
                if not word.isdigit():
                    errors["retry_config.retryable_status_codes"] = (
                        f"{word!r} is not a status code; list codes like 502, 503"
                    )
                    break
                codes.append(int(word))
            data["retry_config"] = {
                **self.keep.get("retry_config", {}),
                "max_retries": _int(self.max_retries),
                "initial_backoff_ms": _int(self.initial_backoff_ms),
                "max_backoff_ms": _int(self.max_backoff_ms),
                "backoff_multiplier": self.backoff_multiplier,
                "retryable_status_codes": codes,
                "retry_on_connection_error": self.retry_on_connection_error,
                "retry_non_idempotent": self.retry_non_idempotent,
            }
        if self.rate_limit_mode == "off":
            data["rate_limit"] = None
        elif self.rate_limit_mode == "custom":
            limit: dict[str, Any] = {
                k: v
                for k, v in self.keep.get("rate_limit", {}).items()
                if k
                not in (
                    "requests_per_second",
                    "burst_size",
                    "requests_per_window",
                    "window_seconds",
                )
            }
            limit.update(algorithm=self.rl_algorithm, key=self.rl_key.strip() or "ip")
            if self.rl_requests_per_second is not None:
                limit["requests_per_second"] = self.rl_requests_per_second
            for name, value in (
                ("burst_size", self.rl_burst_size),
                ("requests_per_window", self.rl_requests_per_window),
            ):
                if value is not None:
                    limit[name] = _int(value)
            if self.rl_window_seconds is not None:
                limit["window_seconds"] = self.rl_window_seconds
            data["rate_limit"] = limit
        if self.cors_mode == "off":
            data["cors"] = None
        elif self.cors_mode == "custom":
            data["cors"] = {
                **self.keep.get("cors", {}),
                "allowed_origins": _words(self.cors_allowed_origins),
                "allowed_methods": _words(self.cors_allowed_methods),
                "allowed_headers": _words(self.cors_allowed_headers),
                "allow_credentials": self.cors_allow_credentials,
                "max_age": _int(self.cors_max_age),
            }
        for name in JSON_FIELDS:
            text = self.json_text.get(name, "").strip()
            if not text:
                continue
            try:
                value = json.loads(text)
            except ValueError as exc:
                errors[name] = f"not valid JSON: {exc}"
                continue
            if not isinstance(value, dict):
                errors[name] = "must be a JSON object ({...})"
                continue
            data[name] = value
        if "plugins" in self.keep:
            data["plugins"] = self.keep["plugins"]
        for name in _KEPT_AS_SET:
            if name in self.keep:
                data[name] = self.keep[name]
        if errors:
            raise FormErrors(errors)
        return data


def rate_inputs(
    algorithm: str,
    requests_per_second: float | None,
    requests_per_window: float | None,
    window_seconds: float | None,
) -> frozenset[str]:
    """The rate inputs a rate-limit editor shows for ``algorithm``: a token bucket is
    set by requests per second (and a burst), a fixed or sliding window by requests
    per window and the window. An input of the other shape stays shown while it holds
    a value (a configuration may give a token bucket its rate per window), so nothing
    the limit uses is ever hidden."""
    if algorithm == "token_bucket":
        shown = {"requests_per_second", "burst_size"}
        if requests_per_window is not None or window_seconds is not None:
            shown |= {"requests_per_window", "window_seconds"}
    else:
        shown = {"requests_per_window", "window_seconds", "burst_size"}
        if requests_per_second is not None:
            shown.add("requests_per_second")
    return frozenset(shown)


def field_for(path: str, known: set[str] | frozenset[str]) -> str | None:
    """The input an error at ``path`` belongs to: the path itself, else its nearest
    parent that has an input (``methods[1]`` -> ``methods``,
    ``cors.allowed_origins[0]`` -> ``cors.allowed_origins``); None: the whole route."""
    while path:
        if path in known:
            return path
        if _INDEX.search(path):
            path = _INDEX.sub("", path)
        elif "." in path:
            path = path.rsplit(".", 1)[0]
        else:
            return None
    return None
