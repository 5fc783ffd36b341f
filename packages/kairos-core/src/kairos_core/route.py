"""`Router` (one route) and the settings that belong to it."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ._model import KairosModel, aliased
from .ai import ai_entry
from .auth import check_forward_claims
from .backend import Backend
from .edge import CorsConfig
from .identity import (
    MAX_TAGS,
    RESERVED_NAMES,
    ROUTE_NAME_PATTERN,
    TAG_PATTERN,
    looks_derived,
    route_id,
)
from .paths import PathTemplate, parse_external_path, parse_internal_path
from .plugins import PluginEntries
from .ratelimit import RateLimitConfig
from .resilience import CircuitBreakerConfig, HealthCheckConfig, OutlierDetectionConfig
from .transform import from_kairos_rs

ClaimValue = str | int | bool
#: Upper bound for any body-size setting (1 GiB): bodies are buffered in memory.
MAX_BODY_LIMIT = 1 << 30
_OPT_OUT_FIELDS = ("rate_limit", "cors")

__all__ = [
    "HTTP_METHODS",
    "MAX_BODY_LIMIT",
    "ClaimValue",
    "LoadBalancingStrategy",
    "RetryConfig",
    "RouteTimeouts",
    "Router",
    "Timeouts",
    "WebSocketConfig",
    "effective_timeouts",
]

#: Methods a route may proxy. CONNECT and TRACE never are: CONNECT would open a tunnel
#: through the gateway to wherever a backend lets it, and TRACE echoes the request
#: (cookies and credentials included) back to a page that asks (cross-site tracing).
HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
_NEVER_PROXIED = frozenset({"CONNECT", "TRACE"})
HTTP_METHODS: tuple[str, ...] = get_args(HttpMethod)
PathParams = Literal["pass", "refuse"]
LoadBalancingStrategy = Literal[
    "round_robin", "least_connections", "random", "weighted", "ip_hash", "latency_aware"
]
ConnectMs = Annotated[int, Field(ge=1, le=600_000)]
ReadMs = Annotated[int, Field(ge=1, le=3_600_000)]
TotalMs = Annotated[int, Field(ge=1, le=3_600_000)]


def _upper(value: object) -> object:
    if not isinstance(value, str):
        return value
    method = value.upper()
    if method in _NEVER_PROXIED:
        raise ValueError(
            f"{method} is never proxied (CONNECT would tunnel through the gateway, TRACE "
            "would echo credentials back)"
        )
    return method


class Timeouts(KairosModel):
    """Upstream timeouts in milliseconds.

    ``connect_ms`` and ``read_ms`` apply to each try; ``total_ms`` (None: no limit)
    is one deadline for all tries of a request together, backoff pauses included.
    """

    connect_ms: ConnectMs = 5000
    read_ms: ReadMs = 30000
    total_ms: TotalMs | None = None


class RouteTimeouts(KairosModel):
    """Per-route timeouts; a field left None inherits the top-level `Timeouts`.

    (So a route cannot lift a top-level ``total_ms``; it can only set its own.)
    """

    connect_ms: ConnectMs | None = None
    read_ms: ReadMs | None = None
    total_ms: TotalMs | None = None


def effective_timeouts(route: Router, defaults: Timeouts) -> Timeouts:
    """The timeouts that apply to ``route``: its own where set, else ``defaults``."""
    own = route.timeouts
    if own is None:
        return defaults
    return Timeouts(
        connect_ms=defaults.connect_ms if own.connect_ms is None else own.connect_ms,
        read_ms=defaults.read_ms if own.read_ms is None else own.read_ms,
        total_ms=defaults.total_ms if own.total_ms is None else own.total_ms,
    )


class RetryConfig(KairosModel):
    """How a route retries failed tries, and how many retries it may spend.

    The budget caps retries over a sliding ``budget_window_s``: at most
    ``max(budget_min_retries, budget_ratio * requests in the window)`` retries, so a
    failing backend cannot multiply the load on the others. ``budget_min_retries``
    lets a quiet route still retry.
    """

    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    initial_backoff_ms: Annotated[int, Field(ge=0)] = 100
    max_backoff_ms: Annotated[int, Field(ge=0)] = 5000
    backoff_multiplier: Annotated[float, Field(ge=1)] = 2.0
    retryable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = aliased(
        "retryable_status_codes", "retry_on_status_codes", default_factory=lambda: [502, 503, 504]
    )
    retry_on_connection_error: bool = True
    retry_non_idempotent: bool = False
    budget_ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
    budget_min_retries: Annotated[int, Field(ge=0)] = 3
    budget_window_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryConfig:
        if self.initial_backoff_ms > self.max_backoff_ms:
            raise ValueError(
                f"initial_backoff_ms ({self.initial_backoff_ms}) must not exceed "
                f"max_backoff_ms ({self.max_backoff_ms})"
            )
        return self


class WebSocketConfig(KairosModel):
    """How long a proxied WebSocket may stay open.

    ``idle_timeout_s``: no byte in either direction for this long closes both sides
    (Envoy's stream idle timeout, 5 minutes, is the default: long enough for
    applications that ping every 30-60 s). ``max_lifetime_s`` (None: no limit) closes
    a connection this long after its upgrade, whatever its traffic.
    """

    idle_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    max_lifetime_s: Annotated[float, Field(gt=0, le=604_800)] | None = None


def _websocket_flag(value: object) -> object:
    # ``websocket: true`` is the short form of ``websocket: {}``; false means none.
    if value is True:
        return {}
    if value is False:
        return None
    return value


#: kairos-rs's route fields that become a ``transform`` plugin entry.
_TRANSFORMATIONS = frozenset({"request_transformation", "response_transformation"})


class Router(KairosModel):
    """One route: requests matching ``external_path`` and ``methods`` go to ``backends``.

    The kairos-rs single-backend form (``host`` and ``port`` on the route) is
    accepted and becomes ``backends=[{host, port}]``.
    """

    #: What the API, CLI and UI address the route by (unique; see `identity`). Absent:
    #: the route is addressed by a derived id (`route_id`).
    name: Annotated[str, Field(pattern=ROUTE_NAME_PATTERN)] | None = None
    #: Labels to select routes by (``kairos routes list --tag T``); no behaviour of their own.
    tags: (
        Annotated[list[Annotated[str, Field(pattern=TAG_PATTERN)]], Field(max_length=MAX_TAGS)]
        | None
    ) = None
    external_path: str
    internal_path: str
    methods: Annotated[list[Annotated[HttpMethod, BeforeValidator(_upper)]], Field(min_length=1)]
    auth_required: bool = False
    #: At least one, except on a route the ``ai`` plugin answers (its providers are
    #: its upstreams).
    backends: list[Backend] = Field(default_factory=list)
    load_balancing_strategy: LoadBalancingStrategy = "round_robin"
    retry_config: RetryConfig | None = aliased("retry_config", "retry", default=None)
    timeouts: RouteTimeouts | None = None
    #: Replaces the top-level ``circuit_breaker`` block as a whole for this route.
    circuit_breaker: CircuitBreakerConfig | None = None
    #: Replaces the top-level ``health_check`` block as a whole for this route.
    health_check: HealthCheckConfig | None = None
    #: Replaces the top-level ``outlier_detection`` block as a whole for this route.
    outlier_detection: OutlierDetectionConfig | None = None
    preserve_host: bool = False
    #: ``;`` path parameters (``/a;v=1/b``): "pass" them to the backend as received, or
    #: "refuse" any ``;`` in the path (400). On every route, a parameter that hides a
    #: dot segment (``..;x``) is refused.
    path_params: PathParams = "pass"
    #: Let a ``{param}`` value hold an encoded ``/`` or ``\`` (``%2F``, ``%5C``); by
    #: default such a request is refused (400 invalid_path).
    allow_encoded_slash: bool = False
    #: ``"websocket"`` (kairos-rs's spelling) lets the route carry WebSockets too, with
    #: the default `WebSocketConfig`; plain HTTP requests are still proxied.
    protocol: Literal["http", "websocket"] = "http"
    #: Upgrade requests (``Upgrade: websocket`` GETs) are proxied as WebSockets:
    #: ``true`` or a `WebSocketConfig` block. Absent, false or null: they are not.
    websocket: Annotated[WebSocketConfig | None, BeforeValidator(_websocket_flag)] = None
    #: Claims the token must carry for this route: name -> accepted value or values. A
    #: claim that is a list (e.g. roles) passes when it contains an accepted value.
    required_claims: dict[str, ClaimValue | list[ClaimValue]] | None = None
    #: Merged over `jwt.forward_claims` for this route: claim name -> header name.
    forward_claims: dict[str, str] | None = None
    #: Do not pass the client's Authorization header on to the backend.
    strip_authorization: bool = False
    #: This route's own limit; absent: the top-level one applies; null: no limit here.
    rate_limit: RateLimitConfig | None = None
    #: This route's own CORS policy; absent: the top-level one; null: none here.
    cors: CorsConfig | None = None
    #: Largest request body for this route, in bytes (absent: the top-level value).
    max_body_size: Annotated[int, Field(ge=0, le=MAX_BODY_LIMIT)] | None = None
    #: Request body bytes kept to send a request again (absent: the top-level value).
    replay_buffer_size: Annotated[int, Field(ge=0, le=MAX_BODY_LIMIT)] | None = None
    #: Plugins for this route, merged over the top-level ``plugins`` by name.
    plugins: PluginEntries | None = None

    @model_serializer(mode="wrap")
    def _keep_explicit_nulls(self, handler: SerializerFunctionWrapHandler) -> Any:
        # `rate_limit: null` and `cors: null` opt a route out of the top-level policy;
        # a dump that drops None fields must keep them, or the opt-out is lost on save.
        data = handler(self)
        if isinstance(data, dict):
            for name in _OPT_OUT_FIELDS:
                if getattr(self, name) is None and name in self.model_fields_set:
                    data[name] = None
        return data

    def opts_out_of(self, name: str) -> bool:
        """True when the route sets ``name`` (rate_limit or cors) to null explicitly."""
        return getattr(self, name) is None and name in self.model_fields_set

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and looks_derived(value):
            raise ValueError(
                "names of the form r-<12 hex digits> are kept for the ids of unnamed routes"
            )
        if value in RESERVED_NAMES:
            raise ValueError(
                f"{value!r} is reserved: /api/routes/{value} is an endpoint of its own"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            twice = sorted({t for t in value if value.count(t) > 1})
            raise ValueError(f"tags must differ; given more than once: {', '.join(twice)}")
        return value

    @property
    def id(self) -> str:
        """The route's name, else its derived id (see `kairos_core.identity`)."""
        return route_id(self)

    @field_validator("forward_claims")
    @classmethod
    def _forward_claims(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_forward_claims(value)

    @model_validator(mode="wrap")
    @classmethod
    def _needs_backends(cls, data: Any, handler: ModelWrapValidatorHandler[Router]) -> Router:
        """``backends`` must not be empty unless the route enables the ``ai`` plugin.
        Reported on the field, as pydantic's own ``min_length`` would, and alongside
        the route's other errors."""
        errors: list[Any] = []
        router: Router | None = None
        try:
            router = handler(data)
        except ValidationError as exc:
            errors = list(exc.errors())
        if router is not None:
            if router.backends or ai_entry(router.plugins):
                return router
        elif (
            not isinstance(data, dict)
            or data.get("backends")
            or "host" in data
            or ai_entry(data.get("plugins") if isinstance(data.get("plugins"), list) else None)
        ):
            raise ValidationError.from_exception_data(cls.__name__, errors)
        if isinstance(data, dict) and "backends" in data:
            errors.append(
                {
                    "type": "too_short",
                    "loc": ("backends",),
                    "input": data["backends"],
                    "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0},
                }
            )
        else:
            errors.append({"type": "missing", "loc": ("backends",), "input": data})
        raise ValidationError.from_exception_data(cls.__name__, errors)

    @model_validator(mode="after")
    def _claims_need_auth(self) -> Router:
        if not self.auth_required:
            for name in ("required_claims", "forward_claims", "strip_authorization"):
                if getattr(self, name):
                    raise ValueError(f"{name} needs auth_required: true")
        return self

    @model_validator(mode="before")
    @classmethod
    def _kairos_rs_transformations(cls, data: Any) -> Any:
        """kairos-rs's ``request_transformation`` / ``response_transformation`` become
        the route's ``transform`` plugin entry (docs/transform.md)."""
        if not isinstance(data, dict) or not _TRANSFORMATIONS & data.keys():
            return data
        data = dict(data)
        config = from_kairos_rs(
            data.pop("request_transformation", None), data.pop("response_transformation", None)
        )
        plugins = data.get("plugins") or []
        if not isinstance(plugins, list):
            return data  # the plugins field reports its own error
        if any(isinstance(p, dict) and p.get("name") == "transform" for p in plugins):
            raise ValueError(
                "give request_transformation / response_transformation or a 'transform' "
                "plugin entry, not both"
            )
        data["plugins"] = [*plugins, {"name": "transform", "config": config}]
        return data

    @model_validator(mode="before")
    @classmethod
    def _legacy_backend(cls, data: Any) -> Any:
        if not isinstance(data, dict) or ("host" not in data and "port" not in data):
            return data
        if "backends" in data:
            raise ValueError("give either 'backends' or the legacy 'host' and 'port', not both")
        if "host" not in data or "port" not in data:
            raise ValueError("the legacy single-backend form needs both 'host' and 'port'")
        data = dict(data)
        data["backends"] = [{"host": data.pop("host"), "port": data.pop("port")}]
        return data

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> object:
        if value in ("ftp", "dns"):
            raise ValueError(
                f"protocol {value!r} is not supported yet; only 'http' and 'websocket' are"
            )
        return value

    @model_validator(mode="after")
    def _websocket_needs_get(self) -> Router:
        if self.websocket_config is not None and "GET" not in self.methods:
            raise ValueError(
                "a WebSocket route (protocol 'websocket' or websocket) needs GET in methods: "
                "the upgrade is a GET request"
            )
        return self

    @property
    def websocket_config(self) -> WebSocketConfig | None:
        """The route's WebSocket settings when it carries WebSockets, else None."""
        if self.websocket is not None:
            return self.websocket
        return _DEFAULT_WEBSOCKET if self.protocol == "websocket" else None

    @field_validator("external_path")
    @classmethod
    def _external_path(cls, value: str) -> str:
        parse_external_path(value)
        return value

    @field_validator("internal_path")
    @classmethod
    def _internal_path(cls, value: str, info: ValidationInfo) -> str:
        external = info.data.get("external_path")
        parse_internal_path(value, parse_external_path(external) if external else None)
        return value

    @field_validator("methods")
    @classmethod
    def _dedupe_methods(cls, value: list[HttpMethod]) -> list[HttpMethod]:
        return list(dict.fromkeys(value))

    def external_template(self) -> PathTemplate:
        return parse_external_path(self.external_path)


_DEFAULT_WEBSOCKET = WebSocketConfig()
