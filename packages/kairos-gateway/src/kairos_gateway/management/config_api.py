"""`/api/config`: the whole configuration, its sections, reload and status.

Secrets are shown as ``"***"``; sending ``"***"`` back (in a whole config or a section)
keeps the current secret, so a UI can round-trip what it read without knowing it.
``GET /api/config?secrets=clear`` shows them in clear: the admin role only (see
`access.needed_role`), logged and recorded in the audit trail.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kairos_core import (
    BadRequest,
    ConfigError,
    ConfigStatus,
    FieldError,
    FieldErrorBody,
    ReloadStatus,
    RouteNotFound,
    ValidationResult,
    load_config,
)

from ..messages import ApiRequest, ApiResponse
from .live import ConfigData, redacted_data, restore_secrets, revealed_data

if TYPE_CHECKING:
    from .context import ApiContext

#: Sections of the config the UI edits on their own: ``/api/config/{section}``.
SECTIONS = ("jwt", "rate_limit", "cors")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _errors(errors: list[FieldError]) -> list[FieldErrorBody]:
    return [FieldErrorBody.model_validate(e.as_dict()) for e in errors]


def wants_clear_secrets(request: ApiRequest) -> bool:
    """``?secrets=clear`` (True) or ``redacted`` / absent (False); 400 otherwise."""
    mode = request.query_params().get("secrets", "redacted")
    if mode not in ("redacted", "clear"):
        raise BadRequest(f"secrets={mode!r} must be 'redacted' or 'clear'")
    return mode == "clear"


def get_config(api: ApiContext, *, clear: bool = False) -> ApiResponse:
    config = api.runtime.snapshot.config
    data = revealed_data(config) if clear else redacted_data(config)
    return ApiResponse.json(200, data, api.etag_header())


async def put_config(api: ApiContext, request: ApiRequest) -> ApiResponse:
    body = request.json()
    if not isinstance(body, dict):
        raise ConfigError([FieldError((), "the configuration must be a JSON object")])
    snapshot = await api.live.change(request.headers, lambda _: dict(body))
    return ApiResponse.json(200, redacted_data(snapshot.config), api.etag_header())


def validate_config(api: ApiContext, request: ApiRequest) -> ApiResponse:
    """Would ``PUT /api/config`` accept this body? Always 200 with a `ValidationResult`
    (full field paths); nothing changes. ``"***"`` secrets stand for the live ones,
    as in a PUT."""
    errors: list[FieldError] = []
    try:
        body = request.json()
        if not isinstance(body, dict):
            raise ConfigError([FieldError((), "the configuration must be a JSON object")])
        current = api.runtime.snapshot.config
        data = restore_secrets(body, redacted_data(current), revealed_data(current))
        api.runtime.plugins.check(load_config(data))
    except ConfigError as exc:
        errors = exc.errors
    except BadRequest as exc:  # a body that is not JSON is "not valid" here, not a 4xx
        errors = [FieldError((), exc.detail)]
    return ApiResponse.model(200, ValidationResult(valid=not errors, errors=_errors(errors)))


def _section(name: str) -> str:
    if name not in SECTIONS:
        raise RouteNotFound(f"no configuration section {name!r}; sections: {', '.join(SECTIONS)}")
    return name


def get_section(api: ApiContext, name: str) -> ApiResponse:
    data = redacted_data(api.runtime.snapshot.config)
    return ApiResponse.json(200, data.get(_section(name)), api.etag_header())


async def put_section(api: ApiContext, request: ApiRequest, name: str) -> ApiResponse:
    """Replace one section; ``null`` removes it."""
    section = _section(name)
    body = request.json()

    def edit(config: ConfigData) -> ConfigData:
        if body is None:
            config.pop(section, None)
            if section == "jwt":
                config.pop("jwt_secret", None)  # else it would stand in for the block
        else:
            config[section] = body
        return config

    snapshot = await api.live.change(request.headers, edit)
    return ApiResponse.json(200, redacted_data(snapshot.config).get(section), api.etag_header())


def status(api: ApiContext) -> ApiResponse:
    live = api.live
    snapshot = api.runtime.snapshot
    file = live.file
    record = live.last_reload
    body = ConfigStatus(
        config_version=snapshot.generation,
        etag=live.etag,
        loaded_at=_iso(live.loaded_at),
        source_path=None if file is None else str(file.path),
        file_sha256=None if file is None else file.digest,
        file_changed_on_disk=False if file is None else file.changed_on_disk(),
        persisted=file is not None or api.cluster is not None,
        hot_reload=snapshot.config.hot_reload,
        watcher_running=api.watcher is not None and api.watcher.running,
        last_reload=None
        if record is None
        else ReloadStatus(
            trigger=record.trigger,
            ok=record.ok,
            at=_iso(record.at),
            error=record.error,
            errors=_errors(record.errors),
        ),
        routes=len(snapshot.table),
        cluster=None if api.cluster is None else api.cluster.status(),
    )
    return ApiResponse.model(200, body, api.etag_header())


async def reload(api: ApiContext, request: ApiRequest) -> ApiResponse:
    api.live.check_if_match(request.headers)
    await api.live.reload("api")
    return status(api)
