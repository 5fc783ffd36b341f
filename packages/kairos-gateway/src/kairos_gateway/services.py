"""What a gateway lends the plugins that ask for it (``Plugin.services``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from prometheus_client.registry import CollectorRegistry

from .upstream import UpstreamPool

__all__ = ["PluginServices"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PluginServices:
    """What a gateway lends the plugins that ask for it (``Plugin.services``): one per
    gateway process, the same for every snapshot."""

    #: The pooled upstream client the proxy uses.
    pool: UpstreamPool
    #: Monotonic seconds.
    clock: Callable[[], float]
    #: The gateway's Prometheus registry (``/metrics``), for a plugin's collectors.
    metrics: CollectorRegistry | None = None
    #: State a plugin keeps across snapshots (breakers, counters), by a key it chooses.
    kept: dict[str, Any] = field(default_factory=dict)
    #: Awaited when the gateway stops (after the last request): close stores, clients.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def keep(self, key: str, factory: Callable[[], T]) -> T:
        """The object kept under ``key``, made by ``factory`` the first time."""
        found = self.kept.get(key)
        if found is None:
            found = self.kept[key] = factory()
        return cast(T, found)
