"""Process settings: where to listen and how to log. Not part of the config file.

Built once in `cli.main()` from the environment and the command line, then passed
explicitly; nothing reads the environment at import time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kairos_core import ADMIN_ROLES, AdminRole
from kairos_core.admin import MIN_ADMIN_TOKEN_CHARS

from .logs import LogFormat, parse_level

DEFAULT_PORT = 5900
#: Header blocks beyond this are not even buffered: Tornado closes the connection.
HARD_HEADER_LIMIT = 2 * 1024 * 1024


class SettingsError(ValueError):
    """An environment variable or flag has a value that cannot be used."""


def parse_workers(raw: str, source: str) -> int:
    """A worker count: a positive integer, or ``auto`` for the number of cores."""
    if raw.strip().lower() == "auto":
        return os.cpu_count() or 1
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{source}={raw!r} must be a number of workers or 'auto'") from None
    if not 1 <= value <= 256:
        raise SettingsError(f"{source}={raw!r} must be between 1 and 256")
    return value


def _gc_thresholds(raw: str) -> tuple[int, int, int] | None:
    """``"50000,20,20"`` (three non-negative integers) or ``"python"`` (its defaults)."""
    if raw.strip().lower() == "python":
        return None
    try:
        first, second, third = (int(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(
            f"KAIROS_GC_THRESHOLDS={raw!r} must be three integers such as 50000,20,20, or 'python'"
        ) from None
    if min(first, second, third) < 0:
        raise SettingsError(f"KAIROS_GC_THRESHOLDS={raw!r} must not be negative")
    return first, second, third


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name}={raw!r} must be a finite number, not negative")
    return value


@dataclass(frozen=True, slots=True)
class NamedToken:
    """A named management API token with a role, given in the environment."""

    name: str
    role: AdminRole
    token: str = field(repr=False)


_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def parse_named_tokens(raw: str) -> tuple[NamedToken, ...]:
    """``KAIROS_ADMIN_TOKENS``: ``name:role:token`` entries separated by commas (a token
    may hold ``:`` but not ``,``). Errors name the entry, never its token."""
    found: list[NamedToken] = []
    for number, entry in enumerate(raw.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, _, rest = entry.partition(":")
        role, _, token = rest.partition(":")
        where = f"KAIROS_ADMIN_TOKENS entry {number}"
        if _TOKEN_NAME.fullmatch(name) is None:
            raise SettingsError(
                f"{where} must be name:role:token with a name of letters, digits, '_', '.', '-'"
            )
        if role not in ADMIN_ROLES:
            raise SettingsError(
                f"{where} ({name}): the role must be one of {', '.join(ADMIN_ROLES)}"
            )
        if len(token) < MIN_ADMIN_TOKEN_CHARS:
            raise SettingsError(
                f"{where} ({name}): the token must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
            )
        if any(t.name == name for t in found):
            raise SettingsError(f"{where}: the name {name!r} is used twice")
        found.append(NamedToken(name, role, token))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    config_path: Path = field(default_factory=lambda: Path("config.json"))
    log_format: LogFormat = "json"
    log_level: int = 20
    #: `-` for standard output, `off`, or a file path.
    access_log: str = "-"
    #: A keep-alive connection with no request in progress (or a client still sending
    #: its request headers) is closed after this long.
    idle_timeout_s: float = 60.0
    #: Longest wait for a client to send a request body.
    body_timeout_s: float = 60.0
    #: On SIGTERM, how long in-flight requests may run before connections are closed.
    drain_timeout_s: float = 15.0
    #: Request header blocks larger than this get 431 (up to `HARD_HEADER_LIMIT`, past
    #: which the connection is closed unanswered).
    max_header_size: int = 64 * 1024
    #: Worker processes accepting on the same port (SO_REUSEPORT); 1 = this process.
    workers: int = 1
    #: Bearer token for the management API; without one only loopback clients may call it.
    admin_token: str | None = field(default=None, repr=False)
    #: Named tokens with roles (``KAIROS_ADMIN_TOKENS``), besides those of the config.
    admin_tokens: tuple[NamedToken, ...] = ()
    #: The config file watcher folds events closer together than this into one reload.
    watch_debounce_ms: int = 300
    #: Metrics for the UI: sampled this often, one history point per step, kept this long.
    metrics_interval_s: float = 1.0
    metrics_history_step_s: float = 10.0
    metrics_retention_s: float = 86_400.0
    #: ``KAIROS_REDIS_URL``: join the cluster sharing this Redis (creates the config's
    #: ``cluster`` block, or replaces its ``redis_url``).
    redis_url: str | None = field(default=None, repr=False)
    #: A plugin hook that keeps the event loop busy longer than this is logged.
    plugin_slow_ms: float = 50.0
    #: The cyclic garbage collector's thresholds once serving (None: Python's own).
    gc_thresholds: tuple[int, int, int] | None = (50_000, 20, 20)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        port_raw = env.get("KAIROS_PORT", str(DEFAULT_PORT))
        try:
            port = int(port_raw)
        except ValueError:
            raise SettingsError(f"KAIROS_PORT={port_raw!r} is not a port number") from None
        fmt = env.get("KAIROS_LOG_FORMAT", "json").lower()
        if fmt not in ("json", "text"):
            raise SettingsError(f"KAIROS_LOG_FORMAT={fmt!r} must be 'json' or 'text'")
        settings = cls(
            host=env.get("KAIROS_HOST", "0.0.0.0"),
            port=port,
            config_path=Path(env.get("KAIROS_CONFIG_PATH", "config.json")),
            log_format="json" if fmt == "json" else "text",
            log_level=parse_level(env.get("KAIROS_LOG_LEVEL") or env.get("RUST_LOG")),
            access_log=env.get("KAIROS_ACCESS_LOG", "-"),
            idle_timeout_s=_float(env, "KAIROS_IDLE_TIMEOUT_S", 60.0),
            drain_timeout_s=_float(env, "KAIROS_DRAIN_TIMEOUT_S", 15.0),
            admin_token=env.get("KAIROS_ADMIN_TOKEN") or None,
            admin_tokens=parse_named_tokens(env.get("KAIROS_ADMIN_TOKENS", "")),
            workers=parse_workers(env.get("KAIROS_WORKERS", "1"), "KAIROS_WORKERS"),
            redis_url=env.get("KAIROS_REDIS_URL") or None,
            plugin_slow_ms=_float(env, "KAIROS_PLUGIN_SLOW_MS", 50.0),
            gc_thresholds=_gc_thresholds(env.get("KAIROS_GC_THRESHOLDS", "50000,20,20")),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError("KAIROS_REDIS_URL must be a redis://, rediss:// or unix:// URL")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port {self.port} is out of range 0-65535")
        if self.idle_timeout_s <= 0:
            raise SettingsError("the idle timeout must be positive")
        if self.admin_token is not None and len(self.admin_token) < MIN_ADMIN_TOKEN_CHARS:
            # The same floor as admin.token in the config file.
            raise SettingsError(
                f"KAIROS_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
            )
