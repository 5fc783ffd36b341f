"""Changing the live configuration: one lock, validate, persist, then swap.

Every change, from the API, the file watcher or SIGHUP, goes through `LiveConfig` under
one lock, so changes apply one at a time and each sees the result of the last. A change
is validated and compiled into a new snapshot off to the side; the file is written
(atomically) next; only then is the snapshot swapped in. If validation fails nothing
happens (422); if the write fails the new snapshot is dropped (503), so the running
config and the file never disagree.

In a cluster (`cluster` block or ``KAIROS_REDIS_URL``) Redis takes the file's place:
a change is stored there with a compare-and-set on the version this node runs, then
made live; the file is only the seed of an empty Redis and is not written. A change
computed on a version another node has since replaced is computed again on the newer
one (after catching up), unless the caller's If-Match named the old one: then 412.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from kairos_core import (
    ConfigError,
    FieldError,
    GatewayConfig,
    config_to_json,
    derived_route_id,
    load_config,
)

from ..cluster.base import CannotApply, StaleVersion, StoreUnavailable
from .errors import Conflict, NotPersisted, PreconditionFailed
from .store import ChangedOnDisk, ConfigFile

if TYPE_CHECKING:
    from tornado.httputil import HTTPHeaders

    from ..runtime import Runtime
    from ..snapshot import Snapshot

log = logging.getLogger("kairos.gateway")

#: What asked for a reload. "sibling": another worker process changed the file;
#: "cluster": a newer version was read from the cluster's Redis.
Trigger = Literal["api", "watcher", "sighup", "sibling", "cluster"]
ConfigData = dict[str, Any]
#: How a redacted secret is shown, and recognised when sent back unchanged.
REDACTED = "***"
#: Tries at a change while other nodes keep changing the cluster's configuration.
CLUSTER_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change (for the audit trail): a token name, ``loopback``,
    ``file``, ``sighup``, ``cluster``, ``gateway``; from where (an address, or ""); and
    by what trigger (``api``, ``rollback``, or a reload's `Trigger`)."""

    name: str
    source: str = ""
    trigger: str = "api"


#: The actor of the changes made in the current task (see `acting`).
ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("kairos_actor", default=None)


@contextlib.contextmanager
def acting(actor: Actor) -> Iterator[None]:
    """Changes made inside the block are recorded as ``actor``'s."""
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


#: Who a reload is recorded as, by trigger.
_RELOAD_ACTORS: dict[str, str] = {
    "watcher": "file",
    "sighup": "sighup",
    "sibling": "file",
    "cluster": "cluster",
}


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    trigger: Trigger
    ok: bool
    at: float
    error: str | None = None
    errors: list[FieldError] = field(default_factory=list)


def revealed_data(config: GatewayConfig) -> ConfigData:
    """The config as JSON data, secrets in clear (what the file holds)."""
    data: ConfigData = json.loads(config_to_json(config))
    return data


def redacted_data(config: GatewayConfig) -> ConfigData:
    """The config as JSON data with every secret shown as ``***``."""
    return config.model_dump(mode="json", exclude_none=True)


def restore_secrets(new: object, redacted: object, revealed: object) -> object:
    """``new`` with each redacted secret sent back unchanged replaced by its current value.

    A string holding ``***`` that equals the redacted current value at the same place
    (``"***"`` itself, or a URL whose password is masked) stands for "keep it". The
    same place in ``routers`` is the current route with the same id (`_restore_routes`).
    """
    if isinstance(new, str):
        if REDACTED in new and new == redacted and isinstance(revealed, str):
            return revealed
        return new
    if isinstance(new, dict):
        old_r = redacted if isinstance(redacted, dict) else {}
        old_v = revealed if isinstance(revealed, dict) else {}
        return {
            k: _restore_routes(v, old_r[k], old_v.get(k))
            if k == "routers" and isinstance(v, list) and isinstance(old_r.get(k), list)
            else restore_secrets(v, old_r.get(k), old_v.get(k))
            for k, v in new.items()
        }
    if isinstance(new, list):
        old_rl = redacted if isinstance(redacted, list) else []
        old_vl = revealed if isinstance(revealed, list) else []
        return [
            restore_secrets(
                v, old_rl[i] if i < len(old_rl) else None, old_vl[i] if i < len(old_vl) else None
            )
            for i, v in enumerate(new)
        ]
    return new


def _restore_routes(new: list[Any], redacted: list[Any], revealed: object) -> list[Any]:
    """Routes with their redacted secrets restored from the current route with the same
    id (name, else derived), or when no route has it, from the one at the same index:
    a configuration that drops or reorders routes keeps each route's own secrets."""
    clear = revealed if isinstance(revealed, list) else []
    by_id = {_route_id(r): i for i, r in enumerate(redacted) if _route_id(r) is not None}
    out = []
    for index, route in enumerate(new):
        at = by_id.get(_route_id(route), index)
        old_r = redacted[at] if at < len(redacted) else None
        old_v = clear[at] if at < len(clear) else None
        out.append(restore_secrets(route, old_r, old_v))
    return out


def _route_id(route: object) -> str | None:
    if not isinstance(route, dict):
        return None
    name, methods, path = route.get("name"), route.get("methods"), route.get("external_path")
    if isinstance(name, str):
        return name
    if isinstance(methods, list) and isinstance(path, str):
        return derived_route_id(map(str, methods), path)
    return None


@contextlib.contextmanager
def _cluster_errors() -> Iterator[None]:
    """The cluster's failures as management API errors."""
    try:
        yield
    except StoreUnavailable as exc:
        raise NotPersisted(
            "the cluster's Redis cannot be reached, so the change was not applied on any "
            "node; the running configuration is unchanged"
        ) from exc
    except CannotApply as exc:
        raise PreconditionFailed(str(exc)) from exc


def etag_of(snapshot: Snapshot) -> str:
    """The config version as an entity tag: a hash of the (redacted) configuration.

    Content, not the generation counter: generations start again at 1 on a restart and
    differ between worker processes, while the same configuration must carry the same
    tag wherever and whenever it is read, so an If-Match sent to another worker (or
    after a restart) is judged by what it names."""
    return config_etag(snapshot.config)


def config_etag(config: GatewayConfig) -> str:
    """`etag_of` a configuration. A cluster node's own ``cluster`` block is left out:
    no change can set it (see `ClusterNode.keep_own_block`), and without it every node
    running the cluster's configuration names it with the same tag, so an If-Match or
    a kept version recorded on one node means the same on every other."""
    data = redacted_data(config)
    data.pop("cluster", None)
    canonical = json.dumps(data, sort_keys=True).encode()
    return f'"{hashlib.sha256(canonical).hexdigest()[:20]}"'


class ClusterStore(Protocol):
    """What a change needs from the cluster node (`cluster.ClusterNode`) when the
    configuration lives in Redis."""

    async def catch_up(self) -> None: ...
    async def store_change(self, config: GatewayConfig) -> tuple[int, str]: ...
    def stored_change(self, version: int, digest: str) -> None: ...
    async def reload(self) -> Snapshot | None: ...
    def keep_own_block(
        self, current: GatewayConfig, proposed: object, config: GatewayConfig
    ) -> GatewayConfig: ...


class LiveConfig:
    """``on_change`` is called after a change made here (not a reload) is saved and live."""

    def __init__(
        self,
        runtime: Runtime,
        source: Path | None,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self._on_change = on_change
        self.file = ConfigFile(source) if source is not None else None
        self.loaded_at = time.time()
        self._last_reload: ReloadRecord | None = None
        #: Told of every reload's outcome, with the one before (the live event feed).
        self.reload_listener: Callable[[ReloadRecord | None, ReloadRecord], None] | None = None
        #: Held by every change and reload (and by the cluster follower).
        self.lock = asyncio.Lock()
        self._etag: tuple[Snapshot, str] | None = None
        #: Set when the gateway is a cluster node (by the app).
        self.cluster: ClusterStore | None = None

    @property
    def last_reload(self) -> ReloadRecord | None:
        """The outcome of the last reload (None: none since start-up)."""
        return self._last_reload

    @last_reload.setter
    def last_reload(self, record: ReloadRecord) -> None:
        previous, self._last_reload = self._last_reload, record
        if self.reload_listener is not None:
            self.reload_listener(previous, record)

    @property
    def etag(self) -> str:
        snapshot = self.runtime.snapshot
        cached = self._etag
        if cached is None or cached[0] is not snapshot:
            cached = self._etag = (snapshot, etag_of(snapshot))
        return cached[1]

    def check_if_match(self, headers: HTTPHeaders) -> None:
        """412 unless ``If-Match`` (when sent) names the current version or ``*``."""
        wanted = headers.get("If-Match")
        if wanted is None:
            return
        tags = [tag.strip().removeprefix("W/") for tag in wanted.split(",")]
        if "*" in tags or self.etag in tags:
            return
        raise PreconditionFailed(
            f"the configuration changed: the current version is {self.etag}; "
            "fetch it again and retry"
        )

    async def change(
        self, headers: HTTPHeaders, edit: Callable[[ConfigData], ConfigData]
    ) -> Snapshot:
        """Apply ``edit`` (current config data, secrets in clear -> new data) live.

        Raises `PreconditionFailed` (stale If-Match), `Conflict` (the file was edited on
        disk, or the cluster's configuration kept changing), `ConfigError` (invalid
        result), `NotPersisted` (the file or Redis could not be written), or whatever
        ``edit`` raises; in every case nothing changes.
        """
        async with self.lock:
            cluster = self.cluster
            if cluster is None:
                return await self._change(headers, edit)
            for _ in range(CLUSTER_ATTEMPTS):
                try:
                    return await self._change(headers, edit, cluster)
                except StaleVersion:
                    with _cluster_errors():
                        await cluster.catch_up()  # then judge If-Match and edit again
            raise Conflict(
                "other nodes kept changing the cluster's configuration while this change "
                "was being stored; retry"
            )

    async def _change(
        self,
        headers: HTTPHeaders,
        edit: Callable[[ConfigData], ConfigData],
        cluster: ClusterStore | None = None,
    ) -> Snapshot:
        self.check_if_match(headers)
        file = self.file
        if cluster is None and file is not None and await asyncio.to_thread(file.changed_on_disk):
            raise Conflict(
                f"{file.path} was changed on disk since it was loaded; apply that edit "
                "first (POST /api/config/reload) or undo it"
            )
        current = self.runtime.snapshot.config
        revealed = revealed_data(current)
        proposed = edit(revealed_data(current))  # a copy: ``edit`` may change it
        proposed_data = restore_secrets(proposed, redacted_data(current), revealed)
        config = load_config(proposed_data)
        if cluster is not None:
            config = cluster.keep_own_block(current, proposed_data, config)
        runtime = self.runtime
        snapshot = runtime.prepare(config)
        if cluster is not None:
            try:
                with _cluster_errors():
                    stored = await cluster.store_change(config)
            except BaseException:
                runtime.discard(snapshot)
                raise
            runtime.activate(snapshot)
            cluster.stored_change(*stored)
        else:
            if file is not None:
                try:
                    await asyncio.to_thread(file.save, current, config)
                except ChangedOnDisk:
                    runtime.discard(snapshot)
                    raise Conflict(
                        f"{file.path} was changed on disk since it was loaded; apply that "
                        "edit first (POST /api/config/reload) or undo it"
                    ) from None
                except OSError as exc:
                    runtime.discard(snapshot)
                    log.error(
                        "config change not applied: the config file could not be written",
                        extra={"fields": {"path": str(file.path), "error": str(exc)}},
                    )
                    raise NotPersisted(
                        "the change could not be saved to the config file, so it was not "
                        "applied; the running configuration is unchanged"
                    ) from exc
            runtime.activate(snapshot)
        self.loaded_at = time.time()
        if self._on_change is not None:
            self._on_change()
        return snapshot

    def adopt(self, snapshot: Snapshot, trigger: Trigger) -> None:
        """Make a prepared ``snapshot`` live and record it (caller holds `lock`)."""
        if ACTOR.get() is None:
            with acting(Actor(_RELOAD_ACTORS.get(trigger, trigger), trigger=trigger)):
                self.runtime.activate(snapshot)
        else:
            self.runtime.activate(snapshot)
        self.loaded_at = time.time()
        self.last_reload = ReloadRecord(trigger, True, self.loaded_at)

    def record(self, trigger: Trigger, *, error: str, errors: list[FieldError]) -> None:
        """Record a reload that failed (caller logs it)."""
        self.last_reload = ReloadRecord(trigger, False, time.time(), error, errors)

    async def reload(self, trigger: Trigger) -> Snapshot | None:
        """Re-read the config file and make it live.

        The watcher's reload does nothing when the file's content is what the running
        config came from (the gateway's own write, or an edit undone). Raises
        `ConfigError` when the file is invalid; the running config keeps serving and
        the error is kept for `/api/config/status`.

        In a cluster, every trigger re-reads the cluster's configuration instead (the
        file is only the seed); raises `ServiceUnavailable` when Redis cannot be reached.
        """
        if ACTOR.get() is None:
            with acting(Actor(_RELOAD_ACTORS.get(trigger, trigger), trigger=trigger)):
                return await self._reload(trigger)
        return await self._reload(trigger)

    async def _reload(self, trigger: Trigger) -> Snapshot | None:
        if self.cluster is not None:
            return await self.cluster.reload()
        file = self.file
        if file is None:
            raise Conflict("the gateway was started without a config file; there is none to reload")
        async with self.lock:
            try:
                if trigger in ("watcher", "sibling"):
                    digest = await asyncio.to_thread(file.current_digest)
                    if digest == file.digest:
                        last = self._last_reload
                        if last is not None and not last.ok:
                            # The file is back to what is running: the failure is over.
                            self.last_reload = ReloadRecord(trigger, True, time.time())
                        return None
                config, digest = await asyncio.to_thread(file.load)
                snapshot = self.runtime.prepare(config)
            except ConfigError as exc:
                self.last_reload = ReloadRecord(trigger, False, time.time(), str(exc), exc.errors)
                log.error(
                    "config reload failed; still serving the previous configuration",
                    extra={
                        "fields": {
                            "trigger": trigger,
                            "path": str(file.path),
                            "errors": [str(e) for e in exc.errors],
                        }
                    },
                )
                raise
            self.runtime.activate(snapshot)
            file.digest = digest
            self.loaded_at = time.time()
            self.last_reload = ReloadRecord(trigger, True, self.loaded_at)
            return snapshot
