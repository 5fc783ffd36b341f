"""`kairos-gateway`: load settings and config, serve until SIGTERM/SIGINT, drain, exit.

Exit codes: 0 after a clean stop (or a valid `--check`), 1 for an invalid or unreadable
config, 2 for bad flags or environment, 3 when the listener cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from kairos_core import ConfigError, GatewayConfig, RateLimitConfig, load_config_file

from ._version import __version__
from .app import Gateway
from .cache.workers import WorkerPurges
from .fdlimit import raise_fd_limit
from .logs import configure
from .plugins import PluginRegistry
from .settings import GatewaySettings, SettingsError, parse_workers
from .snapshot import check_runtime
from .supervisor import CACHE_PURGED, CONFIG_CHANGED, SYNC_CONFIG, reserve_port, supervise
from .tls import check_listen

log = logging.getLogger("kairos.gateway")

EXIT_CONFIG = 1
EXIT_USAGE = 2
EXIT_BIND = 3

#: A SIGTERM this soon after the first one is a duplicate delivery, not "stop now".
REPEATED_SIGTERM_S = 1.0


#: The environment the gateway reads (settings.py), for ``--help``: name, meaning, default.
ENVIRONMENT = (
    ("KAIROS_HOST", "address to listen on", "0.0.0.0"),
    ("KAIROS_PORT", "port to listen on, 0 for any", "5900"),
    ("KAIROS_CONFIG_PATH", "config file (JSON or YAML)", "./config.json"),
    ("KAIROS_WORKERS", "worker processes sharing the port, or 'auto'", "1"),
    ("KAIROS_LOG_LEVEL", "debug, info, warning or error (RUST_LOG as a fallback)", "info"),
    ("KAIROS_LOG_FORMAT", "json or text", "json"),
    ("KAIROS_ACCESS_LOG", "'-' (standard output), 'off', or a file path", "-"),
    ("KAIROS_ADMIN_TOKEN", "bearer token for the management API", "none: loopback only"),
    ("KAIROS_ADMIN_TOKENS", "named tokens with roles: name:role:token,...", "none"),
    ("KAIROS_IDLE_TIMEOUT_S", "close idle keep-alive connections after this long", "60"),
    ("KAIROS_DRAIN_TIMEOUT_S", "on SIGTERM, how long in-flight requests may run", "15"),
    ("KAIROS_REDIS_URL", "join the cluster sharing this Redis", "none"),
    ("KAIROS_PLUGIN_SLOW_MS", "log a plugin hook that blocks the loop longer", "50"),
    ("KAIROS_GC_THRESHOLDS", "garbage collector thresholds, or 'python'", "50000,20,20"),
)


def _epilog() -> str:
    width = max(len(name) for name, _, _ in ENVIRONMENT)
    lines = [f"  {name:<{width}}  {meaning} ({default})" for name, meaning, default in ENVIRONMENT]
    return "environment variables (default in parentheses):\n" + "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kairos-gateway",
        description="Kairos HTTP API gateway. Flags override KAIROS_* environment variables.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="config file (KAIROS_CONFIG_PATH, ./config.json)")
    p.add_argument("--host", help="address to listen on (KAIROS_HOST, 0.0.0.0)")
    p.add_argument("--port", type=int, help="port to listen on, 0 for any (KAIROS_PORT, 5900)")
    p.add_argument(
        "--workers",
        help="worker processes sharing the port, or 'auto' for one per core (KAIROS_WORKERS, 1)",
    )
    p.add_argument("--check", action="store_true", help="validate the config file and exit")
    p.add_argument("--version", action="version", version=f"kairos-gateway {__version__}")
    return p


def _fail(code: int, message: str) -> int:
    print(f"kairos-gateway: {message}", file=sys.stderr)
    return code


def load(path: Path, *, explicit: bool) -> GatewayConfig | None:
    """The config at `path`; None when the default path has no file (built-in default)."""
    if not path.exists() and not explicit:
        return None
    return load_config_file(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = GatewaySettings.from_env()
        overrides: dict[str, object] = {}
        if args.config is not None:
            overrides["config_path"] = args.config
        if args.host is not None:
            overrides["host"] = args.host
        if args.port is not None:
            overrides["port"] = args.port
        if args.workers is not None:
            overrides["workers"] = parse_workers(args.workers, "--workers")
        settings = dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]
        settings.check()
    except SettingsError as exc:
        return _fail(EXIT_USAGE, str(exc))

    explicit = args.config is not None or "KAIROS_CONFIG_PATH" in os.environ
    warnings: list[str] = []
    try:
        config = load(settings.config_path, explicit=explicit)
        if config is not None:
            check_runtime(config, PluginRegistry())
            warnings = check_listen(config)
    except ConfigError as exc:
        lines = "\n".join(f"  - {error}" for error in exc.errors) or f"  - {exc}"
        return _fail(EXIT_CONFIG, f"invalid config {settings.config_path}:\n{lines}")

    if args.check:
        if config is None:
            return _fail(EXIT_CONFIG, f"no config file at {settings.config_path}")
        for warning in warnings:
            print(f"kairos-gateway: warning: {warning}", file=sys.stderr)
        print(f"{settings.config_path}: valid ({len(config.routers)} routes)")
        return 0

    configure(settings.log_format, settings.log_level)
    # Even without a file the gateway is bound to its path: routes added through the
    # management API are saved there, and a file created there is picked up.
    source: Path = settings.config_path
    if config is None:
        config = GatewayConfig(version=1, routers=[])
        log.info(
            f"no config file at {settings.config_path}: serving the gateway's own endpoints "
            "only; to add routes, copy examples/config.json to ./config.json or pass --config"
            " (routes added through the management API are saved to that file)"
        )
    if settings.workers > 1:
        return _supervise(config, settings, source)
    try:
        return _run(lambda: serve(config, settings, source))
    except KeyboardInterrupt:
        return 0


def _supervise(config: GatewayConfig, settings: GatewaySettings, source: Path) -> int:
    port, reservation = reserve_port(settings.host, settings.port)
    settings = dataclasses.replace(settings, port=port)
    if any(limit.backend == "memory" for limit in _rate_limits(config)):
        log.warning(
            f"{settings.workers} workers with in-memory rate limits: each worker counts "
            "separately, so a client gets up to that many times the limit; use the Redis "
            'store (rate_limit.backend: "redis") for one shared count'
        )
    log.info(f"starting {settings.workers} workers on port {port}")

    def run_worker(index: int, metrics_dir: Path) -> int:
        return _run(lambda: serve(config, settings, source, worker=index, metrics_dir=metrics_dir))

    try:
        return supervise(settings.workers, run_worker)
    finally:
        if reservation is not None:
            reservation.close()


def _rate_limits(config: GatewayConfig) -> list[RateLimitConfig]:
    limits = [config.rate_limit_for(router) for router in config.routers]
    return [limit for limit in limits if limit is not None]


def _run(main_coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main_coro())


async def serve(
    config: GatewayConfig,
    settings: GatewaySettings,
    source: Path | None,
    *,
    worker: int | None = None,
    metrics_dir: Path | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    raise_fd_limit(config)
    gateway = Gateway(config, settings, source=source, worker=worker, metrics_dir=metrics_dir)
    try:
        await gateway.start()
    except OSError as exc:
        gateway.access_log.close()
        return _fail(EXIT_BIND, f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    except ConfigError as exc:  # a TLS file changed since it was checked
        gateway.access_log.close()
        lines = "\n".join(f"  - {error}" for error in exc.errors)
        return _fail(EXIT_CONFIG, f"invalid config {settings.config_path}:\n{lines}")
    if settings.gc_thresholds is not None:
        # What exists once serving (modules, config, routes) is never garbage: keep it
        # out of every collection. The request path makes no reference cycles (a test
        # checks), so young collections rarely find any; collecting less often cut
        # CPU per request at 10,000 connections, where every collection scans more
        # (docs/decisions.md).
        gc.freeze()
        gc.set_threshold(*settings.gc_thresholds)

    stop = asyncio.Event()
    first_sigterm: float | None = None
    signals = 0

    def on_signal(signum: int) -> None:
        # A SIGTERM sent to a whole process group reaches the gateway twice under a
        # wrapper that forwards it (`uv run`, a shell script): directly, then from the
        # wrapper. Such a repeat (within REPEATED_SIGTERM_S) is the same request to stop.
        nonlocal first_sigterm, signals
        now = time.monotonic()
        if signum == signal.SIGTERM:
            if first_sigterm is not None and now - first_sigterm < REPEATED_SIGTERM_S:
                log.info("repeated SIGTERM ignored: still draining")
                return
            if first_sigterm is None:
                first_sigterm = now
        signals += 1
        if signals == 1:
            log.info("shutting down", extra={"fields": {"signal": signal.Signals(signum).name}})
            stop.set()
        else:
            log.warning("second signal: not waiting for in-flight requests")
            gateway.abort_drain()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    def on_hangup() -> None:
        log.info("SIGHUP: reloading the config file")
        gateway.reload_certificates()
        gateway.management.reload_in_background()

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    if worker is not None:
        supervisor = os.getppid()
        # A change saved through this worker's API: the supervisor tells every worker
        # (SYNC_CONFIG), and each re-reads the file unless it already runs it.
        gateway.on_config_change = lambda: os.kill(supervisor, CONFIG_CHANGED)
        loop.add_signal_handler(
            SYNC_CONFIG, lambda: gateway.management.reload_in_background("sibling")
        )
        if metrics_dir is not None:
            # A purge through this worker's API reaches the others' memory stores
            # through a journal in the shared directory (see cache.workers).
            purges = WorkerPurges(
                metrics_dir,
                workers=settings.workers,
                notify=lambda: os.kill(supervisor, CACHE_PURGED),
            )
            gateway.management.cache_workers = purges
            loop.add_signal_handler(CACHE_PURGED, lambda: purges.apply(gateway.runtime.caches()))

    for host, port in gateway.addresses:
        log.info(
            f"listening on {gateway.scheme}://{host}:{port}",
            extra={
                "fields": {
                    "host": host,
                    "port": port,
                    "routes": len(config.routers),
                    "version": __version__,
                    **({"worker": worker} if worker is not None else {}),
                }
            },
        )
    await stop.wait()
    await gateway.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
