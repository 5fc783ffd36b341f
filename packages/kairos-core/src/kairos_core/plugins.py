"""How a configuration enables plugins: `PluginConfig` entries, top level and per route.

The gateway finds installed plugins (the ``kairos.plugins`` entry-point group) and
validates each entry's ``config`` against the plugin's own model; here only the shape
of an entry is checked, so a config file stays readable without the plugins installed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from ._model import KairosModel

__all__ = ["PLUGIN_NAME_PATTERN", "PluginConfig", "PluginEntries", "effective_plugins"]

#: Lower-case letters, digits, ``-`` and ``_``, starting with a letter.
PLUGIN_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"


class PluginConfig(KairosModel):
    """One plugin enabled (or, per route, turned off) with its settings.

    Top-level entries apply to every route; a route's entry of the same name replaces
    the top-level one for that route, and ``enabled: false`` turns it off there.
    ``priority`` overrides the plugin's own (higher runs first within a phase).
    """

    name: Annotated[str, Field(pattern=PLUGIN_NAME_PATTERN)]
    enabled: bool = True
    priority: Annotated[int, Field(ge=-1_000_000, le=1_000_000)] | None = None
    config: dict[str, Any] = Field(default_factory=dict)


def _unique_names(entries: list[PluginConfig]) -> list[PluginConfig]:
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ValueError(f"plugin {entry.name!r} is listed twice")
        seen.add(entry.name)
    return entries


#: A list of plugin entries, each name at most once.
PluginEntries = Annotated[list[PluginConfig], Field(max_length=64), AfterValidator(_unique_names)]


def effective_plugins(
    global_entries: list[PluginConfig] | None,
    route_entries: list[PluginConfig] | None,
    route_index: int,
) -> list[tuple[tuple[str | int, ...], PluginConfig]]:
    """The entries that apply to route ``route_index``, each with its field path.

    Top-level entries first (in order), a route entry of the same name in its place;
    then the route's own other entries. Entries with ``enabled: false`` are left out.
    """
    own = {entry.name: (j, entry) for j, entry in enumerate(route_entries or ())}
    out: list[tuple[tuple[str | int, ...], PluginConfig]] = []
    for i, entry in enumerate(global_entries or ()):
        replaced = own.pop(entry.name, None)
        if replaced is None:
            out.append((("plugins", i), entry))
        else:
            out.append((("routers", route_index, "plugins", replaced[0]), replaced[1]))
    out.extend((("routers", route_index, "plugins", j), entry) for j, entry in own.values())
    return [(path, entry) for path, entry in out if entry.enabled]
