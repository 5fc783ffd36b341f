"""Who changed the configuration, what changed, and the versions to go back to.

Every configuration that goes live (an API change, a file edit seen by the watcher,
SIGHUP, a rollback, a cluster update) passes `AuditTrail.applied`, which compares it
with the one before and records an `entry`: time, actor, source address, trigger, the
route-level changes and the names of the settings that changed (never a value, so no
secret is ever recorded), and the resulting version (the configuration's ETag). The
configuration itself is kept per version for `rollback`. A read of the configuration
with its secrets in clear (``GET /api/config?secrets=clear``) is recorded too, as an
entry with trigger ``secrets_read`` and no changes (`secrets_read`).

Who made the change comes from `acting`: the management API sets the caller (token name
or ``loopback``) and address around a call, a reload its trigger; a change with nothing
set is the gateway's own (``gateway``).

With a config file, the trail and the versions live in a directory beside it
(``admin.audit.dir``, default ``.kairos-audit``): ``audit.jsonl``, one entry per line,
and ``versions/<etag>.json`` (the configuration with its secrets, readable by the
gateway's user only, like the config file's backups). Worker processes share them: a
change already recorded (same version reached from the same one) is not recorded again,
so the sibling workers' reloads of a change leave one entry. Without a config file
both are kept in memory. Both are bounded (``keep_entries``, ``keep_versions``).

In a cluster the trail and the versions are the cluster's, kept in its Redis
(`cluster.history`): the node that stores a change records its entry and version in
the same atomic step (`change_entry` builds it), so every node shows the same trail
and can roll back to a version another node recorded. A trail made ``shared`` keeps
nothing itself; `applied` still returns each entry (the live event feed's).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kairos_core import GatewayConfig, RouteNotFound

from .live import ACTOR, Actor, ConfigData, redacted_data, revealed_data

if TYPE_CHECKING:
    from ..snapshot import Snapshot

__all__ = ["AuditTrail", "change_entry", "config_changes"]


def _bare(etag: str) -> str:
    """An entity tag without its quotes (and weak prefix): the version's name."""
    return etag.removeprefix("W/").strip('"')


log = logging.getLogger("kairos.gateway")


def _route_key(route: dict[str, Any]) -> str:
    """A named route by its name (so moving it is a change, not a removal and an
    addition); an unnamed one by its methods and path, which is what its id stands for."""
    name = route.get("name")
    if isinstance(name, str):
        return name
    methods = ",".join(sorted(str(m) for m in route.get("methods") or ()))
    return f"{methods} {route.get('external_path')}"


def config_changes(before: ConfigData, after: ConfigData) -> list[dict[str, str]]:
    """What differs, route by route and setting by setting, from two redacted dumps:
    ``{"route": "GET /users/{id}", "change": "added|changed|removed"}`` (a named route
    by its name: ``{"route": "users", ...}``) and
    ``{"setting": "rate_limit", "change": ...}``. Values are never part of it."""
    changes: list[dict[str, str]] = []
    old_routes = {_route_key(r): r for r in before.get("routers", [])}
    new_routes = {_route_key(r): r for r in after.get("routers", [])}
    for key, route in new_routes.items():
        if key not in old_routes:
            changes.append({"route": key, "change": "added"})
        elif old_routes[key] != route:
            changes.append({"route": key, "change": "changed"})
    changes += [{"route": k, "change": "removed"} for k in old_routes if k not in new_routes]
    for name in sorted((set(before) | set(after)) - {"routers"}):
        if name not in before:
            changes.append({"setting": name, "change": "added"})
        elif name not in after:
            changes.append({"setting": name, "change": "removed"})
        elif before[name] != after[name]:
            changes.append({"setting": name, "change": "changed"})
    return changes


def change_entry(
    before: ConfigData, after: ConfigData, previous: str, version: str
) -> dict[str, Any] | None:
    """The entry of a change from ``before`` to ``after`` (redacted dumps) made by the
    current `ACTOR`, going from version ``previous`` to ``version``; None when nothing
    changed."""
    changes = config_changes(before, after)
    if not changes:
        return None
    actor = ACTOR.get() or Actor("gateway", trigger="gateway")
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "actor": actor.name,
        "source": actor.source,
        "trigger": actor.trigger,
        "previous_version": _bare(previous),
        "version": _bare(version),
        "changes": changes,
    }


class AuditTrail:
    """The audit entries and kept versions of one gateway (see the module docstring)."""

    def __init__(
        self,
        snapshot: Snapshot,
        etag_of: Any,
        *,
        directory: Path | None,
        keep_entries: int = 1000,
        keep_versions: int = 20,
        shared: bool = False,
    ) -> None:
        self._etag_of = etag_of
        #: The cluster keeps the trail (see the module docstring): record nothing here.
        self.shared = shared
        self._dir = directory
        self._keep_entries = keep_entries
        self._keep_versions = keep_versions
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep_entries)
        self._versions: dict[str, ConfigData] = {}
        self._last = redacted_data(snapshot.config)
        self._last_version = _bare(etag_of(snapshot))
        self._next_id = 1
        #: The configuration at start-up, written with the first change (until then
        #: nothing is written beside the config file).
        self._initial: tuple[str, GatewayConfig] | None = (self._last_version, snapshot.config)

    # -- recording -------------------------------------------------------------------

    def applied(self, snapshot: Snapshot) -> dict[str, Any] | None:
        """A configuration went live: record what changed and return the entry
        (None, and no entry, when nothing changed)."""
        after = redacted_data(snapshot.config)
        version = _bare(self._etag_of(snapshot))
        before, previous = self._last, self._last_version
        self._last, self._last_version = after, version
        entry = change_entry(before, after, previous, version)
        if entry is None or self.shared:
            return entry
        if self._initial is not None:
            self._keep_version(*self._initial)
            self._initial = None
        self._keep_version(version, snapshot.config)
        try:
            self._append(dict(entry))
        except OSError as exc:
            log.error("audit entry not written", extra={"fields": {"error": str(exc)}})
        return entry

    def secrets_read(self, actor: Actor, version: str) -> dict[str, Any] | None:
        """Someone read the configuration with its secrets in clear: an entry with
        trigger ``secrets_read`` and no changes (the version stays what it was).
        A ``shared`` trail records nothing and returns the entry for the cluster's."""
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": actor.name,
            "source": actor.source,
            "trigger": "secrets_read",
            "previous_version": version,
            "version": version,
            "changes": [],
        }
        if self.shared:
            return entry
        try:
            self._append(entry, dedupe=False)
        except OSError as exc:
            log.error("audit entry not written", extra={"fields": {"error": str(exc)}})
        return None

    # -- reading ---------------------------------------------------------------------

    def entries(self, *, limit: int, before: int | None = None) -> list[dict[str, Any]]:
        """Newest first, at most ``limit``, only those with an id below ``before``."""
        every = self._read_entries()
        if before is not None:
            every = [e for e in every if int(e.get("id", 0)) < before]
        return list(reversed(every))[:limit]

    def versions(self) -> list[dict[str, Any]]:
        """The kept versions, newest first: ``version``, ``at``, and whether it is live."""
        found: list[tuple[float, str]] = []
        if self._initial is not None:
            found = [(time.time(), self._initial[0])]
        elif self._dir is None:
            found = [(float(i), v) for i, v in enumerate(self._versions)]
        else:
            for path in self._versions_dir().glob("*.json"):
                with contextlib.suppress(OSError):
                    found.append((path.stat().st_mtime, path.stem))
        found.sort(reverse=True)
        return [
            {
                "version": version,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
                if self._dir is not None
                else None,
                "live": version == self._last_version,
            }
            for at, version in found
        ]

    def version(self, version: str) -> ConfigData:
        """The configuration of a kept ``version`` (secrets in clear), or 404."""
        data = self._load_version(_bare(version))
        if data is None:
            raise RouteNotFound(f"no kept configuration version {version}")
        return data

    # -- storage ---------------------------------------------------------------------

    def _versions_dir(self) -> Path:
        assert self._dir is not None
        return self._dir / "versions"

    def _keep_version(self, version: str, config: GatewayConfig) -> None:
        data = revealed_data(config)
        if self._dir is None:
            self._versions.pop(version, None)
            self._versions[version] = data
            while len(self._versions) > self._keep_versions:
                self._versions.pop(next(iter(self._versions)))
            return
        try:
            folder = self._versions_dir()
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / f"{version}.json"
            text = json.dumps(data, indent=2)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
            kept = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in kept[self._keep_versions :]:
                old.unlink(missing_ok=True)
        except OSError as exc:
            log.error("configuration version not kept", extra={"fields": {"error": str(exc)}})

    def _load_version(self, version: str) -> ConfigData | None:
        if self._initial is not None and self._initial[0] == version:
            return revealed_data(self._initial[1])
        if self._dir is None:
            return self._versions.get(version)
        if not version.isalnum():
            return None  # never a path outside the directory
        path = self._versions_dir() / f"{version}.json"
        try:
            data: ConfigData = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def _append(self, entry: dict[str, Any], *, dedupe: bool = True) -> None:
        """Add ``entry``; with ``dedupe``, not when a sibling worker recorded the same
        change (same version reached from the same one) already."""
        if self._dir is None:
            entry["id"] = self._next_id
            self._next_id += 1
            self._entries.append(entry)
            return
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._dir / "audit.jsonl"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)  # workers share the file
            lines = file.read().splitlines()
            last_id = 0
            for line in lines[-20:]:
                with contextlib.suppress(ValueError):
                    seen = json.loads(line)
                    last_id = max(last_id, int(seen.get("id", 0)))
                    if dedupe and (seen.get("version"), seen.get("previous_version")) == (
                        entry["version"],
                        entry["previous_version"],
                    ):
                        return  # a sibling worker recorded this change already
            entry["id"] = last_id + 1
            file.write(json.dumps(entry) + "\n")
            if len(lines) + 1 > self._keep_entries * 2:
                # Rewrite with the newest entries only (amortised: at twice the bound).
                keep = [*lines, json.dumps(entry)][-self._keep_entries :]
                file.seek(0)
                file.truncate()
                file.write("\n".join(keep) + "\n")

    def _read_entries(self) -> list[dict[str, Any]]:
        if self._dir is None:
            return list(self._entries)
        path = self._dir / "audit.jsonl"
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines[-self._keep_entries :]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out
