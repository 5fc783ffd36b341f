"""Watch the config file and reload it when its content changes.

The parent directory is watched rather than the file, so editors that save by writing
a new file and renaming it over the old one are seen too. Bursts of events (an editor's
several writes, a rename) are debounced into one reload. Whether the content really
changed is decided by `LiveConfig.reload`, which compares content hashes: the gateway's
own atomic writes end up as no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

log = logging.getLogger("kairos.gateway")

#: Events closer together than this are one change.
DEFAULT_DEBOUNCE_MS = 300
_STEP_MS = 50


class FileWatcher:
    def __init__(
        self,
        path: Path,
        on_change: Callable[[], Awaitable[None]],
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
    ) -> None:
        self.path = path.resolve()
        self._on_change = on_change
        self._debounce_ms = debounce_ms
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        #: Set once the watch is in place (tests wait for it before editing the file).
        self.watching = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._stop = asyncio.Event()
        self.watching = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(self._stop))

    def stop(self) -> None:
        """Ask the watch loop to end (within one step); `close` waits for it."""
        if self._stop is not None:
            self._stop.set()

    async def close(self) -> None:
        self.stop()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)

    def _ours(self, change: tuple[Change, str]) -> bool:
        return Path(change[1]) == self.path

    async def _run(self, stop: asyncio.Event) -> None:
        log.info("watching the config file for changes", extra={"fields": {"path": str(self.path)}})
        try:
            async for changes in awatch(
                self.path.parent,
                watch_filter=None,
                debounce=self._debounce_ms,
                step=_STEP_MS,
                stop_event=stop,
                recursive=False,
                yield_on_timeout=True,
                rust_timeout=_STEP_MS * 4,
            ):
                self.watching.set()
                if any(self._ours(change) for change in changes):
                    await self._on_change()
        except Exception:
            log.exception(
                "the config file watcher stopped", extra={"fields": {"path": str(self.path)}}
            )
