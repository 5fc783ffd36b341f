"""What the endpoint modules (`routes`, `config_api`) need from the API that calls them.

`ManagementApi` fits `ApiContext`; the endpoint modules depend on this protocol, not on
the `api` module that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kairos_core import ClusterStatus

    from ..runtime import Runtime
    from .live import LiveConfig
    from .watcher import FileWatcher


class ClusterView(Protocol):
    def status(self) -> ClusterStatus: ...


class ApiContext(Protocol):
    runtime: Runtime
    live: LiveConfig
    watcher: FileWatcher | None

    @property
    def cluster(self) -> ClusterView | None: ...
    def etag_header(self) -> list[tuple[str, str]]: ...


__all__ = ["ApiContext", "ClusterView"]
