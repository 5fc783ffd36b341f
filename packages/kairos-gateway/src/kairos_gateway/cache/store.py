"""Cache entries, the store interface, and the in-process store (bytes-bounded LRU).

A response is stored under its *primary* key (method-independent: GET fills what HEAD
reads; host, path, query and configured headers, see `policies.cache`) and, when it
has a ``Vary``, under the normalised values of the request headers it names. A store
keeps, per primary key, the ``Vary`` names of the last response stored there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .rfc import normalise_vary_value

__all__ = ["CacheStats", "Entry", "MemoryCache", "Purge", "Store", "secondary_key"]

#: What an entry costs besides its body and headers (objects, keys), roughly.
ENTRY_OVERHEAD = 256


@dataclass(slots=True)
class Entry:
    """A stored response and what its freshness needs."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    #: POSIX time the response was stored (or last revalidated).
    stored_at: float
    #: Its age when stored (the origin's or an upstream cache's ``Age``).
    initial_age: float
    #: Freshness lifetime, seconds.
    ttl: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    #: ``no-cache``: revalidate before every use.
    no_cache: bool = False
    #: ``must-revalidate`` / ``proxy-revalidate``: never served stale.
    must_revalidate: bool = False
    etag: str | None = None
    last_modified: str | None = None
    tags: tuple[str, ...] = ()
    route: str = ""
    vary: tuple[str, ...] = ()
    #: ``public`` or ``s-maxage``: may answer requests with credentials.
    public: bool = False

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + ENTRY_OVERHEAD

    def age(self, now: float) -> float:
        return self.initial_age + max(0.0, now - self.stored_at)

    def fresh(self, now: float) -> bool:
        return not self.no_cache and self.age(now) < self.ttl

    def stale_for(self, now: float) -> float:
        """Seconds past its freshness (0 while fresh)."""
        return max(0.0, self.age(now) - self.ttl)

    def retained_for(self) -> float:
        """How long after storing it is worth keeping (fresh, then served stale or
        revalidated with its validators)."""
        keep = self.ttl + max(self.stale_while_revalidate, self.stale_if_error)
        if self.etag is not None or self.last_modified is not None:
            keep = max(keep, self.ttl + 3600)
        return max(1.0, keep - self.initial_age)


def secondary_key(vary: Sequence[str], headers: Mapping[str, str]) -> str:
    """The part of the key a ``Vary`` adds: the normalised values of those headers."""
    if not vary:
        return ""
    get_list = getattr(headers, "get_list", None)
    parts = []
    for name in vary:
        values = get_list(name) if get_list is not None else [headers.get(name, "")]
        parts.append(f"{name}={normalise_vary_value(name, [v for v in values if v])}")
    return "\n".join(parts)


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    bypass: int = 0
    stored: int = 0
    evictions: int = 0
    #: Calls to a shared store that failed (served from the origin instead).
    store_errors: int = 0
    #: Background revalidations started (``stale-while-revalidate``).
    revalidations: int = 0
    #: Background revalidations that got no usable answer (the stale entry stays).
    revalidation_errors: int = 0


@dataclass(frozen=True, slots=True)
class Purge:
    """What to remove: entries of one primary key, of one route, or with one tag."""

    key: str | None = None
    route: str | None = None
    tag: str | None = None


class Store(Protocol):
    stats: CacheStats

    async def get(self, primary: str, headers: Mapping[str, str]) -> Entry | None: ...
    async def put(self, primary: str, headers: Mapping[str, str], entry: Entry) -> None: ...
    async def purge(self, what: Purge) -> int: ...
    def bytes_used(self) -> int: ...
    def entries(self) -> int: ...


@dataclass(slots=True)
class _Variants:
    vary: tuple[str, ...]
    keys: set[str] = field(default_factory=set)


class MemoryCache:
    """Entries in this process, at most ``max_bytes`` in all; the least recently used
    go first. Its `lookup` and `store` are synchronous (the policy's fast path)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[str, Entry]] = OrderedDict()
        self._variants: dict[str, _Variants] = {}
        self._bytes = 0

    def bytes_used(self) -> int:
        return self._bytes

    def entries(self) -> int:
        return len(self._entries)

    def lookup(self, primary: str, headers: Mapping[str, str]) -> Entry | None:
        variants = self._variants.get(primary)
        if variants is None:
            return None
        full = f"{primary}\n{secondary_key(variants.vary, headers)}"
        found = self._entries.get(full)
        if found is None:
            return None
        self._entries.move_to_end(full)
        return found[1]

    def store(self, primary: str, headers: Mapping[str, str], entry: Entry) -> None:
        size = entry.size
        if size > self.max_bytes:
            return
        variants = self._variants.get(primary)
        if variants is not None and variants.vary != entry.vary:
            # The resource now varies on other headers: its old variants are unreachable.
            for full in list(variants.keys):
                self._drop(full)
            variants = None
        if variants is None:
            variants = self._variants[primary] = _Variants(entry.vary)
        full = f"{primary}\n{secondary_key(entry.vary, headers)}"
        if full in self._entries:
            self._drop(full)
            variants = self._variants.setdefault(primary, _Variants(entry.vary))
        self._entries[full] = (primary, entry)
        variants.keys.add(full)
        self._bytes += size
        self.stats.stored += 1
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.stats.evictions += 1

    def _drop(self, full: str) -> None:
        primary, entry = self._entries.pop(full)
        self._bytes -= entry.size
        variants = self._variants.get(primary)
        if variants is not None:
            variants.keys.discard(full)
            if not variants.keys:
                del self._variants[primary]

    def remove(self, what: Purge) -> int:
        doomed = [
            full
            for full, (primary, entry) in self._entries.items()
            if (what.key is not None and primary == what.key)
            or (what.route is not None and entry.route == what.route)
            or (what.tag is not None and what.tag in entry.tags)
        ]
        for full in doomed:
            self._drop(full)
        return len(doomed)

    # -- the Store protocol (async, like a shared store's) ---------------------------

    async def get(self, primary: str, headers: Mapping[str, str]) -> Entry | None:
        return self.lookup(primary, headers)

    async def put(self, primary: str, headers: Mapping[str, str], entry: Entry) -> None:
        self.store(primary, headers, entry)

    async def purge(self, what: Purge) -> int:
        return self.remove(what)
