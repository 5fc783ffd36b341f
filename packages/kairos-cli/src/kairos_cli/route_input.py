"""A route from the command line: ``--file route.json`` and/or flags.

Flags are laid over the file (or, for ``routes update``, over the current route), so
``kairos routes update /x --internal-path /v2/x`` changes one field. Only the shape of
the command line is checked here (a malformed ``--backend`` is a usage error); whether
the route is valid is the gateway's call, answered with field paths.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from kairos_core import HTTP_METHODS, ConfigError

from .errors import CliError, field_lines
from .jsonc import parse_json

__all__ = [
    "STRATEGIES",
    "apply_flags",
    "parse_backend",
    "read_route_file",
    "route_from",
    "route_options",
]

F = TypeVar("F", bound=Callable[..., Any])

STRATEGIES = (
    "round_robin",
    "least_connections",
    "random",
    "weighted",
    "ip_hash",
    "latency_aware",
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BACKEND_KEYS = {"weight": int, "health_check_path": str, "tls_verify": bool, "tls_ca_file": str}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_backend(spec: str) -> dict[str, Any]:
    """``http://host:port[,weight=N][,health_check_path=/h][,tls_verify=false]`` to a
    backend object. No scheme means http://; no port means the scheme's default."""
    url, *options = (part.strip() for part in spec.split(","))
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{spec!r}: expected http://host:port or https://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{spec!r}: a backend is scheme, host and port only (no path)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    backend: dict[str, Any] = {
        "host": f"{scheme}://{host}",
        "port": port if port is not None else _DEFAULT_PORTS[scheme],
    }
    for option in options:
        key, sep, value = option.partition("=")
        kind = _BACKEND_KEYS.get(key.strip())
        if not sep or kind is None:
            known = ", ".join(f"{name}=..." for name in _BACKEND_KEYS)
            raise ValueError(f"{spec!r}: unknown option {option!r} (known: {known})")
        try:
            backend[key.strip()] = _bool(value) if kind is bool else kind(value.strip())
        except ValueError as exc:
            raise ValueError(f"{spec!r}: {key.strip()}: {exc}") from None
    return backend


def _backend_callback(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[dict[str, Any]]:
    try:
        return [parse_backend(value) for value in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _methods_callback(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[str]:
    methods = [m.strip().upper() for value in values for m in value.split(",") if m.strip()]
    for method in methods:
        if method not in HTTP_METHODS:
            raise click.BadParameter(
                f"{method!r} is not one of {', '.join(HTTP_METHODS)}", ctx=ctx, param=param
            )
    return methods


def read_route_file(path: str) -> dict[str, Any]:
    """A route object from a JSON file (``-``: standard input); comments allowed."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    try:
        data = parse_json(text)
    except ConfigError as exc:
        raise CliError(f"{path}: {exc.detail}", details=field_lines(exc.errors)) from exc
    if not isinstance(data, dict):
        raise CliError(f"{path}: a route must be a JSON object")
    return data


def route_options(command: F) -> F:
    """The flags that describe a route (shared by routes add, update and validate)."""
    options = [
        click.option(
            "--file",
            "-f",
            "file",
            metavar="FILE",
            help="Route as JSON ('-' reads standard input); flags given too override it.",
        ),
        click.option("--name", "-n", help="The route's name: what it is addressed by."),
        click.option(
            "--tag",
            "tags",
            multiple=True,
            metavar="TAG",
            help="A tag of the route; repeat for several (replaces the route's tags).",
        ),
        click.option("--external-path", "-e", help="Path clients call, e.g. /api/users/{id}."),
        click.option("--internal-path", "-i", help="Path sent to the backend, e.g. /users/{id}."),
        click.option(
            "--method",
            "-m",
            "methods",
            multiple=True,
            callback=_methods_callback,
            help="HTTP method; repeat it or separate with commas (GET,POST).",
        ),
        click.option(
            "--backend",
            "-b",
            "backends",
            multiple=True,
            callback=_backend_callback,
            metavar="URL[,weight=N][,health_check_path=/p]",
            help="Backend, e.g. http://10.0.0.5:8080,weight=2; repeat for several.",
        ),
        click.option(
            "--strategy",
            type=click.Choice(STRATEGIES),
            help="Load-balancing strategy (default round_robin).",
        ),
        click.option(
            "--auth-required/--no-auth-required",
            default=None,
            help="Require a valid JWT bearer token on this route.",
        ),
        click.option(
            "--preserve-host/--no-preserve-host",
            default=None,
            help="Send the client's Host header to the backend.",
        ),
        click.option(
            "--strip-authorization/--no-strip-authorization",
            default=None,
            help="Do not pass the client's Authorization header on (needs --auth-required).",
        ),
        click.option(
            "--max-body-size",
            type=click.IntRange(min=0),
            help="Largest request body for this route, in bytes.",
        ),
        click.option(
            "--read-timeout-ms",
            type=click.IntRange(min=1),
            help="This route's read timeout per try, in milliseconds.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_FLAG_FIELDS = {
    "name": "name",
    "external_path": "external_path",
    "internal_path": "internal_path",
    "strategy": "load_balancing_strategy",
    "auth_required": "auth_required",
    "preserve_host": "preserve_host",
    "strip_authorization": "strip_authorization",
    "max_body_size": "max_body_size",
}


def apply_flags(base: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """``base`` with every flag that was given laid over it."""
    route = dict(base)
    for flag, field in _FLAG_FIELDS.items():
        if flags.get(flag) is not None:
            route[field] = flags[flag]
    if flags.get("methods"):
        route["methods"] = flags["methods"]
    if flags.get("backends"):
        route["backends"] = flags["backends"]
    if flags.get("tags"):
        route["tags"] = list(flags["tags"])
    if flags.get("read_timeout_ms") is not None:
        timeouts = route.get("timeouts")
        route["timeouts"] = {**(timeouts if isinstance(timeouts, dict) else {})}
        route["timeouts"]["read_ms"] = flags["read_timeout_ms"]
    return route


def route_from(flags: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The route the command line describes: the file (else ``base``), then the flags."""
    start = read_route_file(flags["file"]) if flags.get("file") else dict(base or {})
    route = apply_flags(start, flags)
    if not route:
        raise click.UsageError("describe the route with --file FILE or with flags (see --help)")
    return route
