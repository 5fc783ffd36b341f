"""`/api/routes`: list, read, create, replace, delete and validate routes.

A route is addressed by its id (its ``name``, else its derived id: see
`kairos_core.identity`), ``/api/routes/users``, or by its ``external_path``,
percent-encoded into one URL segment (``/api/routes/%2Fapi%2Fusers%2F%7Bid%7D``). The
two cannot be confused: a decoded segment starting with ``/`` is a path, an id never
does. When several routes share a path (each for different methods), ``?method=GET``
picks the one serving that method; with an id, ``?method`` must be one the route serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from kairos_core import (
    BadRequest,
    ConfigError,
    FieldError,
    FieldErrorBody,
    RouteList,
    RouteNotFound,
    Router,
    ValidationResult,
    load_config,
    load_router,
)

from ..messages import ApiRequest, ApiResponse
from .errors import Conflict
from .live import ConfigData, revealed_data

if TYPE_CHECKING:
    from .context import ApiContext

PREFIX = "/api/routes/"


def location(route: Router) -> str:
    return PREFIX + quote(route.id, safe="")


def route_ref(raw: str) -> str | None:
    """The route id or external path a URL segment names, or None when it is empty."""
    ref = unquote(raw)
    return ref or None


def _select(routers: list[Router], ref: str, method: str | None) -> int:
    """The index of the route ``ref`` (an id, or an external path) names."""
    if not ref.startswith("/"):
        return _select_id(routers, ref, method)
    path = ref
    found = [
        i
        for i, r in enumerate(routers)
        if r.external_path == path and (method is None or method in r.methods)
    ]
    if not found:
        suffix = f" for {method}" if method else ""
        raise RouteNotFound(f"there is no route with external_path {path!r}{suffix}")
    if len(found) > 1:
        raise Conflict(
            f"{len(found)} routes use {path!r} (for different methods): "
            "add ?method=<METHOD> to pick one"
        )
    return found[0]


def _select_id(routers: list[Router], rid: str, method: str | None) -> int:
    for i, router in enumerate(routers):
        if router.id == rid:
            if method is not None and method not in router.methods:
                raise RouteNotFound(f"the route {rid!r} does not serve {method}")
            return i
    raise RouteNotFound(f"there is no route with the name or id {rid!r}")


def _method(request: ApiRequest) -> str | None:
    method = request.query_params().get("method")
    return method.upper() if method else None


def _route_body(body: object) -> tuple[Router, ConfigData]:
    router = load_router(body)
    data: ConfigData = router.model_dump(
        mode="json", exclude_none=True, context={"reveal_secrets": True}
    )
    return router, data


def _same_id(routers: list[Router], new: Router, skip: int | None = None) -> Router | None:
    for i, existing in enumerate(routers):
        if i != skip and existing.id == new.id:
            return existing
    return None


def _clashes(routers: list[Router], new: Router, skip: int | None = None) -> Router | None:
    for i, existing in enumerate(routers):
        if (
            i != skip
            and existing.external_path == new.external_path
            and set(existing.methods) & set(new.methods)
        ):
            return existing
    return None


def list_routes(api: ApiContext, request: ApiRequest) -> ApiResponse:
    """Every route, or with ``?tag=T`` those carrying tag T."""
    snapshot = api.runtime.snapshot
    tag = request.query_params().get("tag")
    chosen = [r for r in snapshot.config.routers if tag is None or tag in (r.tags or ())]
    body = RouteList(config_version=snapshot.generation, routes=chosen, ids=[r.id for r in chosen])
    return ApiResponse.model(200, body, api.etag_header(), exclude_none=True)


def get_route(api: ApiContext, request: ApiRequest, ref: str) -> ApiResponse:
    routers = api.runtime.snapshot.config.routers
    router = routers[_select(routers, ref, _method(request))]
    return ApiResponse.model(200, router, api.etag_header(), exclude_none=True)


async def create_route(api: ApiContext, request: ApiRequest) -> ApiResponse:
    router, data = _route_body(request.json())

    def edit(config: ConfigData) -> ConfigData:
        routers = api.runtime.snapshot.config.routers
        if router.name is not None and _same_id(routers, router) is not None:
            raise Conflict(f"a route named {router.name!r} exists already; change it with PUT")
        clash = _clashes(routers, router)
        if clash is not None:
            overlap = sorted(set(clash.methods) & set(router.methods))
            raise Conflict(
                f"a route for {', '.join(overlap)} {router.external_path} exists already; "
                "change it with PUT"
            )
        config["routers"] = [*config["routers"], data]
        return config

    snapshot = await api.live.change(request.headers, edit)
    created = snapshot.config.routers[-1]
    return ApiResponse.model(
        201,
        created,
        [("Location", location(created)), *api.etag_header()],
        exclude_none=True,
    )


async def replace_route(api: ApiContext, request: ApiRequest, ref: str) -> ApiResponse:
    method = _method(request)
    router, data = _route_body(request.json())
    index = -1

    def edit(config: ConfigData) -> ConfigData:
        nonlocal index
        routers = api.runtime.snapshot.config.routers
        index = _select(routers, ref, method)
        if router.name is not None and _same_id(routers, router, skip=index) is not None:
            raise Conflict(f"another route is named {router.name!r} already")
        clash = _clashes(routers, router, skip=index)
        if clash is not None:
            raise Conflict(f"another route already serves {router.external_path} for those methods")
        config["routers"][index] = data  # "***" secrets are restored by LiveConfig.change
        return config

    snapshot = await api.live.change(request.headers, edit)
    replaced = snapshot.config.routers[index]
    return ApiResponse.model(
        200,
        replaced,
        [("Location", location(replaced)), *api.etag_header()],
        exclude_none=True,
    )


async def delete_route(api: ApiContext, request: ApiRequest, ref: str) -> ApiResponse:
    method = _method(request)

    def edit(config: ConfigData) -> ConfigData:
        index = _select(api.runtime.snapshot.config.routers, ref, method)
        del config["routers"][index]
        return config

    await api.live.change(request.headers, edit)
    return ApiResponse(204, b"", api.etag_header())


def _relative(error: FieldError, index: int) -> FieldError:
    if error.loc[:2] == ("routers", index):
        return FieldError(error.loc[2:], error.message, error.value)
    return error


def validate_route(api: ApiContext, request: ApiRequest) -> ApiResponse:
    """Would this route be accepted by POST? Field paths are relative to the route."""
    errors: list[FieldError] = []
    try:
        router, data = _route_body(request.json())
        routers = api.runtime.snapshot.config.routers
        clash = _clashes(routers, router)
        if router.name is not None and _same_id(routers, router) is not None:
            errors.append(
                FieldError(("name",), "a route with this name exists already", router.name)
            )
        elif clash is not None:
            errors.append(
                FieldError(
                    ("external_path",),
                    "a route for this path and one of these methods exists already",
                    router.external_path,
                )
            )
        else:
            config = revealed_data(api.runtime.snapshot.config)
            config["routers"] = [*config["routers"], data]
            api.runtime.plugins.check(load_config(config))
    except ConfigError as exc:
        errors.extend(_relative(e, len(api.runtime.snapshot.config.routers)) for e in exc.errors)
    except BadRequest as exc:  # a body that is not JSON is "not valid" here, not a 4xx
        errors.append(FieldError((), exc.detail))
    result = ValidationResult(
        valid=not errors, errors=[FieldErrorBody.model_validate(e.as_dict()) for e in errors]
    )
    return ApiResponse.model(200, result)
