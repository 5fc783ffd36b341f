"""The open-file limit: raised to what the system allows, and checked against the config.

Every client connection and every upstream connection is a file descriptor. A
gateway holding 10,000 client connections and up to ``max_connections`` per backend
needs a soft ``RLIMIT_NOFILE`` far above the common default of 1024.
"""

from __future__ import annotations

import logging
import resource

from kairos_core import GatewayConfig

__all__ = ["CLIENT_HEADROOM", "needed_descriptors", "raise_fd_limit"]

log = logging.getLogger("kairos.gateway")

#: Descriptors planned for client connections and the process's own files on top of
#: the upstream connections the config allows.
CLIENT_HEADROOM = 10_240


def needed_descriptors(config: GatewayConfig) -> int:
    """Upstream connections the config allows (each backend once), plus the headroom."""
    top = config.connection_limits.max_connections
    limits: dict[str, int] = {}
    for router in config.routers:
        for backend in router.backends:
            own = backend.max_connections
            limits.setdefault(backend.address, top if own is None else own)
    return sum(limits.values()) + CLIENT_HEADROOM


def raise_fd_limit(config: GatewayConfig) -> int:
    """Raise the soft open-file limit to the hard one; warn when it is still below what
    ``config`` implies. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # not allowed here; the check below says what that means
    needed = needed_descriptors(config)
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit is low for this configuration: raise it (ulimit -n, "
            "systemd LimitNOFILE) or lower connection_limits.max_connections",
            extra={"fields": {"limit": soft, "needed": needed}},
        )
    return soft
