"""Python plugins: policies from other distributions, found through entry points.

A plugin is an object of type `Plugin` that a distribution registers in the entry-point
group ``kairos.plugins`` (``[project.entry-points."kairos.plugins"]`` in its
pyproject)::

    plugin = Plugin(name="api-key", config=ApiKeyConfig, policy=ApiKey, priority=1500)

It names a pydantic model for its settings and a `Policy` subclass built with them,
once per configuration snapshot (a reload builds new instances). `PluginRegistry`
loads the installed plugins once per process, validates the ``plugins`` entries of a
configuration with field paths (``routers[2].plugins[0].config.header: ...``),
builds the policies, and times each plugin hook, logging the ones that keep the event
loop busy longer than ``slow_s``.

See docs/plugins.md for the tutorial.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import types
from collections.abc import Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from kairos_core import (
    ConfigError,
    FieldError,
    GatewayConfig,
    PluginCatalog,
    PluginConfig,
    PluginInfo,
    field_errors,
)
from kairos_core.ai import AiConfig
from kairos_core.cache import CacheConfig
from kairos_core.transform import TransformConfig
from pydantic import BaseModel, ValidationError

from ._version import __version__
from .ai import ai_policy
from .chain import Policy, declared_phases
from .policies import (
    BodyLimit,
    ClientCertificate,
    CorsPolicy,
    JwtPolicy,
    RateLimitPolicy,
    SecurityHeaders,
)
from .policies.cache import cache_policy
from .policies.transform import transform_policy
from .services import PluginServices

if TYPE_CHECKING:
    from .chain import Request

__all__ = ["DEFAULT_PRIORITY", "ENTRY_POINT_GROUP", "Plugin", "PluginRegistry", "PluginServices"]

log = logging.getLogger("kairos.gateway")

ENTRY_POINT_GROUP: Final = "kairos.plugins"
#: A plugin's priority unless it or the config says otherwise: after the built-ins.
DEFAULT_PRIORITY: Final = 800
#: The built-in policies, configured by their own fields (see `policies`).
BUILTINS: Final[tuple[type[Policy], ...]] = (
    CorsPolicy,
    BodyLimit,
    SecurityHeaders,
    ClientCertificate,
    JwtPolicy,
    RateLimitPolicy,
)
_BUILTIN_DESCRIPTIONS: Final = {
    "cors": "CORS allow headers on responses (preflights are answered by the gateway)",
    "body_limit": "413 for request bodies over max_body_size",
    "security_headers": "security response headers where the backend set none",
    "client_cert": "the verified client certificate's subject to the backend (listen.tls); "
    "a client's own copy of the header is always removed",
    "jwt": "bearer token verification (auth_required), claims forwarded as headers",
    "rate_limit": "rate limits (fixed window, sliding window, token bucket)",
}

C = TypeVar("C", bound=BaseModel)
FieldPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Plugin(Generic[C]):
    """What a distribution registers under ``kairos.plugins``."""

    #: As used in ``plugins[].name``: lower-case letters, digits, ``-``, ``_``.
    name: str
    #: The settings model: ``plugins[].config`` is validated against it.
    config: type[C]
    #: Built as ``policy(settings)`` for every route the plugin applies to (with
    #: ``services``: ``policy(settings, services)``).
    policy: Callable[[C], Policy] | Callable[[C, PluginServices], Policy]
    #: Higher runs first within a phase; ``plugins[].priority`` overrides it.
    priority: int = DEFAULT_PRIORITY
    description: str = ""
    #: The phases it may act in, when ``policy`` is a factory rather than the class.
    declares: tuple[str, ...] = ()
    #: Built as ``policy(settings, services)``: the plugin gets the gateway's
    #: `PluginServices` (its upstream pool, state kept across snapshots).
    services: bool = False

    def phases(self) -> list[str]:
        policy = self.policy
        return declared_phases(policy) if isinstance(policy, type) else list(self.declares)


#: Plugins that come with the gateway, enabled like any installed one.
BUNDLED: Final[tuple[Plugin[Any], ...]] = (
    Plugin(
        name="transform",
        config=TransformConfig,
        policy=transform_policy,
        description="rewrite request headers, path and query, and response headers and "
        "statuses, with templates (${header.X}, ${claim.sub}, ...)",
        declares=("on_headers", "before_upstream", "on_response"),
    ),
    Plugin(
        name="ai",
        config=AiConfig,
        policy=ai_policy,
        # Last of the bundled: after authentication, rate limits and the cache, it
        # answers every request itself.
        priority=500,
        description="OpenAI-compatible endpoint in front of LLM providers (OpenAI, "
        "Anthropic, any OpenAI-compatible server): model aliases, fallback, streaming, "
        "token accounting and limits, prompt guards",
        declares=("on_headers", "before_upstream"),
        services=True,
    ),
    Plugin(
        name="cache",
        config=CacheConfig,
        policy=cache_policy,
        # After authentication (a stored response never reaches a client the route
        # would refuse), before rate limiting (a hit costs the backend nothing).
        priority=1000,
        description="RFC 9111 shared response cache (memory or Redis): freshness, Vary, "
        "revalidation, stale-if-error, request coalescing, purge",
        declares=("on_request", "before_upstream", "on_response", "on_chunk", "on_complete"),
    ),
)


_BUNDLED_NAMES: Final = frozenset(p.name for p in BUNDLED)


@dataclass(frozen=True, slots=True)
class _Installed:
    plugin: Plugin[Any]
    package: str | None
    version: str | None


@functools.cache
def _discover(group: str) -> tuple[tuple[_Installed, ...], tuple[tuple[str, str], ...]]:
    """The plugins installed in this environment, and the entry points that failed to
    load (name, reason). Read once per process: installing a plugin needs a restart."""
    found: list[_Installed] = []
    errors: list[tuple[str, str]] = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as exc:
            errors.append((ep.name, f"cannot be loaded: {type(exc).__name__}: {exc}"))
            continue
        if not isinstance(obj, Plugin):
            errors.append((ep.name, f"{ep.value} is not a kairos_gateway.Plugin"))
            continue
        if obj.name != ep.name:
            errors.append((ep.name, f"the entry point names plugin {obj.name!r}"))
            continue
        if obj.name.replace("-", "_") in {p.name for p in BUILTINS}:
            errors.append((ep.name, "the name of a built-in policy cannot be a plugin's"))
            continue
        if obj.name in {p.name for p in BUNDLED}:
            errors.append((ep.name, "a plugin of that name comes with the gateway"))
            continue
        dist = ep.dist
        found.append(_Installed(obj, dist.name if dist else None, dist.version if dist else None))
    for name, reason in errors:
        log.warning("plugin not loaded", extra={"fields": {"plugin": name, "error": reason}})
    return tuple(found), tuple(errors)


class PluginRegistry:
    """The plugins a gateway can enable: the installed ones (entry points) plus any
    given as ``extra`` (tests, embedding applications). One per gateway process."""

    def __init__(
        self,
        extra: Iterable[Plugin[Any]] = (),
        *,
        slow_s: float = 0.05,
        group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        installed, errors = _discover(group) if group is not None else ((), ())
        self._plugins: dict[str, _Installed] = {
            p.name: _Installed(p, "kairos-gateway", __version__) for p in BUNDLED
        }
        self._plugins.update((i.plugin.name, i) for i in installed)
        for plugin in extra:
            self._plugins[plugin.name] = _Installed(plugin, None, None)
        self.errors: dict[str, str] = dict(errors)
        self.slow_s = slow_s

    def __contains__(self, name: str) -> bool:
        return name in self._plugins

    def names(self) -> list[str]:
        return sorted(self._plugins)

    # -- configuration ---------------------------------------------------------------

    def check(self, config: GatewayConfig) -> None:
        """Raise `ConfigError` for every plugin entry of ``config`` that names no
        installed plugin or whose settings do not validate (with field paths)."""
        errors: list[FieldError] = []
        entries: list[tuple[FieldPath, PluginConfig]] = [
            (("plugins", i), e) for i, e in enumerate(config.plugins or ())
        ]
        for r, router in enumerate(config.routers):
            entries += [
                (("routers", r, "plugins", j), e) for j, e in enumerate(router.plugins or ())
            ]
        for path, entry in entries:
            try:
                if entry.enabled:
                    self._settings(path, entry)
                elif entry.name not in self._plugins:
                    # Turning a plugin off needs no settings, but it must exist.
                    raise ConfigError(
                        [FieldError((*path, "name"), self._unknown(entry.name), entry.name)]
                    )
            except ConfigError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigError(errors)

    def policies(
        self,
        entries: Iterable[tuple[FieldPath, PluginConfig]],
        services: PluginServices | None = None,
    ) -> list[Policy]:
        """New policy instances for a route's enabled entries (see `effective_plugins`);
        ``services`` go to the plugins that ask for them."""
        out: list[Policy] = []
        for path, entry in entries:
            plugin, settings = self._settings(path, entry)
            try:
                if plugin.services:
                    if services is None:
                        raise RuntimeError("it needs the gateway's services")
                    policy = cast(Callable[[Any, PluginServices], Policy], plugin.policy)(
                        settings, services
                    )
                else:
                    policy = cast(Callable[[Any], Policy], plugin.policy)(settings)
            except Exception as exc:
                raise ConfigError(
                    [FieldError((*path, "config"), f"plugin {entry.name!r} refused it: {exc}")]
                ) from exc
            policy.name = plugin.name
            policy.priority = plugin.priority if entry.priority is None else entry.priority
            out.append(policy)
        return out

    def _settings(self, path: FieldPath, entry: PluginConfig) -> tuple[Plugin[Any], BaseModel]:
        installed = self._plugins.get(entry.name)
        if installed is None:
            raise ConfigError([FieldError((*path, "name"), self._unknown(entry.name), entry.name)])
        plugin = installed.plugin
        try:
            return plugin, plugin.config.model_validate(entry.config)
        except ValidationError as exc:
            errors = field_errors(exc, plugin.config, prefix=(*path, "config"), conceal=True)
            raise ConfigError(errors) from None

    def _unknown(self, name: str) -> str:
        if name in self.errors:
            return f"plugin {name!r} is installed but {self.errors[name]}"
        builtin = {p.name for p in BUILTINS}
        if name in builtin or name.replace("-", "_") in builtin:
            return f"{name!r} is built in: configure it with its own field, not in plugins"
        close = difflib.get_close_matches(name, list(self._plugins), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        installed = ", ".join(self.names()) or "none"
        return f"no plugin named {name!r} is installed (installed: {installed}){hint}"

    # -- the request path ------------------------------------------------------------

    def wrap(self, policy: Policy, phase: str) -> Callable[..., Any]:
        """``policy``'s hook for ``phase``; an installed plugin's is timed (see
        `slow_s`); the gateway's own (built-in policies, bundled plugins) are not."""
        hook: Callable[..., Any] = getattr(policy, phase)
        if isinstance(policy, BUILTINS) or policy.name in _BUNDLED_NAMES:
            return hook
        slow_s = self.slow_s
        name = policy.name

        def report(seconds: float, request: Request) -> None:
            log.warning(
                "plugin blocked the event loop",
                extra={
                    "fields": {
                        "plugin": name,
                        "phase": phase,
                        "blocked_ms": round(seconds * 1000, 1),
                        "request_id": request.request_id,
                    }
                },
            )

        def timed(request: Request, *args: Any) -> Any:
            start = perf_counter()
            result = hook(request, *args)
            elapsed = perf_counter() - start
            if elapsed > slow_s:
                report(elapsed, request)
            if inspect.iscoroutine(result):
                return _stepped(result, slow_s, lambda s: report(s, request))
            return result

        return timed

    # -- description -----------------------------------------------------------------

    def catalog(self) -> PluginCatalog:
        """Built-in policies and installed plugins, highest priority first."""
        infos = [
            PluginInfo(
                name=p.name,
                builtin=True,
                priority=p.priority,
                phases=declared_phases(p),
                description=_BUILTIN_DESCRIPTIONS.get(p.name, ""),
            )
            for p in BUILTINS
        ]
        for installed in self._plugins.values():
            plugin = installed.plugin
            infos.append(
                PluginInfo(
                    name=plugin.name,
                    builtin=False,
                    priority=plugin.priority,
                    phases=plugin.phases(),
                    description=plugin.description,
                    package=installed.package,
                    version=installed.version,
                    config_schema=plugin.config.model_json_schema(),
                )
            )
        infos.sort(key=lambda i: (-i.priority, i.name))
        return PluginCatalog(plugins=infos, errors=self.errors)


_PENDING: Final = object()


@types.coroutine
def _stepped(
    coro: Coroutine[Any, Any, Any], slow_s: float, report: Callable[[float], None]
) -> Generator[Any, Any, Any]:
    """Await ``coro``, timing each step it runs between two suspensions: a step longer
    than ``slow_s`` held the event loop that long."""
    value: Any = None
    error: BaseException | None = None
    while True:
        start = perf_counter()
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            result = stop.value
        else:
            result = _PENDING
        elapsed = perf_counter() - start
        if elapsed > slow_s:
            report(elapsed)
        if result is not _PENDING:
            return result
        try:
            value, error = (yield yielded), None
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            value, error = None, exc
