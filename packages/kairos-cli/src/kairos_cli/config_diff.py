"""What applying a config file would change on a gateway: the merge, and its diff.

Pure functions on JSON data (full dumps: defaults included, None left out), no I/O.

`target` is the configuration ``kairos config apply FILE`` sends: with ``prune``, the
file itself; without, the live configuration with the file laid over it: each route of
the file replaces the live route with the same id (name, else derived id) or is
appended, live routes the file does not list are kept, and each top-level setting the
file writes replaces the live one (settings it leaves out keep their live values).

`diff` compares the live configuration with a target route by route (by id) and
setting by setting. Values are shown from the redacted forms, so a secret is never
printed: a change seen only in clear is reported as a secret change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kairos_core import GatewayConfig, derived_route_id, load_config

__all__ = ["ConfigDiff", "FieldChange", "ItemChange", "diff", "route_key", "target"]

ConfigData = dict[str, Any]
ChangeKind = Literal["added", "changed", "removed"]
_ABSENT: Any = object()


def route_key(route: ConfigData) -> str:
    """The id of a route in dump data: its name, else derived from methods and path."""
    name = route.get("name")
    if isinstance(name, str):
        return name
    return derived_route_id(map(str, route.get("methods") or ()), str(route.get("external_path")))


def _label(route: ConfigData) -> str:
    return f"{','.join(map(str, route.get('methods') or ()))} {route.get('external_path')}"


def target(
    live: ConfigData, file: GatewayConfig, file_data: ConfigData, *, prune: bool
) -> ConfigData:
    """The configuration to send (see the module docstring). ``file_data`` is ``file``
    dumped as it holds its secrets (in clear, or ``"***"``: keep the live one)."""
    if prune:
        return dict(file_data)
    out = dict(live)
    for name in file.model_fields_set - {"routers"}:
        if name in file_data:
            out[name] = file_data[name]
        else:
            out.pop(name, None)  # written as null: the setting is removed
    routes = list(live.get("routers", []))
    index = {route_key(r): i for i, r in enumerate(routes)}
    for route in file_data.get("routers", []):
        at = index.get(route_key(route))
        if at is None:
            routes.append(route)
        else:
            routes[at] = route
    out["routers"] = routes
    return out


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One value that differs: ``path`` within the route or setting (``""``: all of
    it), redacted ``old`` and ``new`` (`None` when absent), or ``secret``: a secret's
    value differs (or, with ``compared`` False, is given in clear and could not be
    compared with the gateway's redacted one)."""

    path: str
    old: Any = None
    new: Any = None
    secret: bool = False
    compared: bool = True

    def as_json(self) -> dict[str, Any]:
        if self.secret:
            return {"path": self.path, "secret": True, "compared": self.compared}
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class ItemChange:
    """A route (``subject`` "route": ``key`` its id, ``label`` methods and path) or a
    top-level setting (``key`` its name) added, changed or removed."""

    subject: Literal["route", "setting"]
    key: str
    change: ChangeKind
    label: str = ""
    fields: list[FieldChange] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {self.subject: self.key, "change": self.change}
        if self.subject == "route":
            out["label"] = self.label
        if self.change == "changed":
            out["fields"] = [f.as_json() for f in self.fields]
        return out


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    changes: list[ItemChange]
    #: Ids of live routes the file does not list, kept because ``prune`` was not asked.
    kept: list[str]

    @property
    def in_sync(self) -> bool:
        return not self.changes

    def as_json(self) -> dict[str, Any]:
        return {
            "in_sync": self.in_sync,
            "changes": [c.as_json() for c in self.changes],
            "kept": self.kept,
        }

    def counts(self) -> str:
        """``routes: 1 added, 2 changed; settings: 1 changed`` (or ``no changes``)."""
        parts = []
        for subject in ("route", "setting"):
            found = [c.change for c in self.changes if c.subject == subject]
            words = [f"{found.count(k)} {k}" for k in ("added", "changed", "removed") if k in found]
            if words:
                parts.append(f"{subject}s: {', '.join(words)}")
        return "; ".join(parts) or "no changes"


def redacted_form(data: ConfigData) -> ConfigData:
    """``data`` validated (secrets may be ``"***"``) and dumped with secrets redacted.

    Raises `ConfigError` when it is not a valid configuration."""
    return load_config(data, redacted=True).model_dump(mode="json", exclude_none=True)


def _path(base: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{base}[{part}]"
    return f"{base}.{part}" if base else part


def _fields(
    old: Any, new: Any, old_shown: Any, new_shown: Any, compared: bool, at: str = ""
) -> list[FieldChange]:
    """The leaves where ``old`` and ``new`` (as sent) differ, shown redacted."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[FieldChange] = []
        for key in [*old, *(k for k in new if k not in old)]:
            out += _fields(
                old.get(key, _ABSENT),
                new.get(key, _ABSENT),
                _get(old_shown, key),
                _get(new_shown, key),
                compared,
                _path(at, key),
            )
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _fields(a, b, _item(old_shown, i), _item(new_shown, i), compared, _path(at, i))
        return out
    if old_shown == new_shown and old is not _ABSENT and new is not _ABSENT:
        if new == new_shown:
            return []  # the file holds the redacted form ("***"): the gateway keeps its own
        return [FieldChange(at, secret=True, compared=compared)]
    return [
        FieldChange(
            at, None if old is _ABSENT else old_shown, None if new is _ABSENT else new_shown
        )
    ]


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def _item(data: Any, index: int) -> Any:
    return data[index] if isinstance(data, list) and index < len(data) else None


def _by_id(routes: list[ConfigData], shown: list[ConfigData]) -> dict[str, tuple[Any, Any]]:
    """Route id -> (the route as sent, redacted); the two lists hold the same routes."""
    return {route_key(r): (r, s) for r, s in zip(routes, shown, strict=True)}


def diff(
    live: ConfigData,
    wanted: ConfigData,
    *,
    file_ids: set[str] | None = None,
    compared: bool = True,
) -> ConfigDiff:
    """What sending ``wanted`` would change in ``live`` (both as sent: clear secrets, or
    ``"***"``). ``compared``: ``live`` holds its secrets in clear (else a secret given in
    clear is reported as not compared). Raises `ConfigError` when ``wanted`` is invalid.
    """
    live_shown, wanted_shown = redacted_form(live), redacted_form(wanted)
    changes: list[ItemChange] = []
    old_routes = _by_id(live["routers"], live_shown["routers"])
    new_routes = _by_id(wanted["routers"], wanted_shown["routers"])
    for key, (route, shown) in new_routes.items():
        if key not in old_routes:
            changes.append(ItemChange("route", key, "added", _label(route)))
            continue
        old, old_shown = old_routes[key]
        fields = _fields(old, route, old_shown, shown, compared)
        if fields:
            changes.append(ItemChange("route", key, "changed", _label(route), fields))
    for key, (route, _) in old_routes.items():
        if key not in new_routes:
            changes.append(ItemChange("route", key, "removed", _label(route)))
    for name in [*live, *(k for k in wanted if k not in live)]:
        if name == "routers":
            continue
        before, after = live.get(name, _ABSENT), wanted.get(name, _ABSENT)
        if before is _ABSENT:
            changes.append(ItemChange("setting", name, "added"))
        elif after is _ABSENT:
            changes.append(ItemChange("setting", name, "removed"))
        else:
            fields = _fields(before, after, live_shown.get(name), wanted_shown.get(name), compared)
            if fields:
                changes.append(ItemChange("setting", name, "changed", fields=fields))
    kept = [] if file_ids is None else [k for k in old_routes if k not in file_ids]
    return ConfigDiff(changes, kept)
