"""Purges that reach every worker's memory store (``--workers N``).

Each worker has its own memory store, and a ``DELETE /api/cache`` reaches one worker.
That worker purges its own stores, appends the purge to a journal in the supervisor's
shared directory (``cache-purges.jsonl``, next to the per-worker metrics files) and
signals the supervisor, which signals every worker (`supervisor.CACHE_PURGED`). Each
worker then reads the journal from where it stopped, applies the purges of the others
to its memory stores (a Redis store is shared: the first worker purged it) and appends
what it removed. The worker that got the call waits (at most `WAIT_S`) for the others'
lines and answers the sum, saying how many workers it counted and how many had not
answered yet (they still apply it when their signal comes).

The journal is append-only: one line per purge and one per worker answering it, each
written with a single ``write`` on a file opened with ``O_APPEND`` (lines never
interleave), read only up to the last complete line. A worker starting (or restarted)
begins at the journal's end: its store is empty. The file goes with the directory when
the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Final

from . import SharedCache
from .store import MemoryCache, Purge

__all__ = ["WAIT_S", "PurgeOutcome", "WorkerPurges"]

#: How long the worker that got a purge waits for the others' counts.
WAIT_S: Final = 1.0
#: Between two reads of the journal while waiting.
_POLL_S: Final = 0.01
JOURNAL: Final = "cache-purges.jsonl"


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    #: Entries the other workers reported removing.
    purged: int
    #: Other workers that answered within `WAIT_S`.
    answered: int
    #: Other workers that had not (yet) answered.
    pending: int


class WorkerPurges:
    """This worker's end of the purge journal."""

    def __init__(self, directory: Path, *, workers: int, notify: Callable[[], None]) -> None:
        self.path = directory / JOURNAL
        self.workers = workers
        #: Tells the supervisor a purge was journaled (it signals every worker).
        self._notify = notify
        self._pid = os.getpid()
        self._ids = count(1)
        self._offset = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _append(self, record: dict[str, object]) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def _read(self, offset: int) -> tuple[list[dict[str, object]], int]:
        """The complete lines from ``offset`` on, and the offset after the last one."""
        try:
            with self.path.open("rb") as file:
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records, offset + end

    async def announce(self, what: Purge) -> PurgeOutcome:
        """Journal ``what`` (already applied here), tell the other workers, and wait (at
        most `WAIT_S`) for what they removed."""
        ident = f"{self._pid}-{next(self._ids)}"
        start = self._size()
        self._append({"purge": ident, "key": what.key, "route": what.route, "tag": what.tag})
        self._notify()
        others = self.workers - 1
        answered: set[object] = set()
        purged = 0
        offset = start
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while len(answered) < others and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
            records, offset = self._read(offset)
            for record in records:
                if record.get("done") == ident and record.get("pid") not in answered:
                    answered.add(record.get("pid"))
                    removed = record.get("purged")
                    purged += removed if isinstance(removed, int) else 0
        return PurgeOutcome(purged, len(answered), max(0, others - len(answered)))

    def apply(self, caches: Iterable[SharedCache]) -> int:
        """Apply the other workers' purges journaled since the last call to this
        worker's memory stores, answering each; the entries removed."""
        records, self._offset = self._read(self._offset)
        memory = [c.store for c in caches if isinstance(c.store, MemoryCache)]
        total = 0
        for record in records:
            ident = record.get("purge")
            if not isinstance(ident, str) or ident.startswith(f"{self._pid}-"):
                continue
            fields = {
                name: value
                for name in ("key", "route", "tag")
                if isinstance(value := record.get(name), str)
            }
            what = Purge(**fields)
            removed = sum(store.remove(what) for store in memory) if fields else 0
            total += removed
            self._append({"done": ident, "pid": self._pid, "purged": removed})
        return total
