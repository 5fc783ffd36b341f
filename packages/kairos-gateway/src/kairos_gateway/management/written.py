"""The config file as its author wrote it: a change rewrites only what it changes.

`updated_text` takes the file's text and the configuration before and after a change
and returns the new text. It compares the two configurations' canonical dumps and
edits the author's document only where they differ:

- a key the author did not write stays unwritten unless the change sets it to a
  value other than its default; an unchanged value keeps its exact text (spacing,
  inline or not, ``2.0`` or ``2``, an alias or a kairos-rs spelling);
- keys keep their order and their spelling; new keys go after the existing ones;
- list items are paired old-to-new by identity (a route by its id: its ``name``, else
  derived from its ``external_path`` and ``methods``; a plugin entry by ``name``; a
  scalar by value), then the unpaired ones by position, so a route updated in place
  (even its path) stays at its index; new items are appended, removed ones deleted;
- new text follows the file's style: its indent unit (the first indented line), an
  object or list that was on one line stays on one line, a new one is put on one line
  when it holds only scalars and fits.

Every result is checked: parsed and validated, it must give exactly the new
configuration. A rewritten route that does not (the kairos-rs single-backend form
given new backends, say) is written in its canonical, defaults-omitted form instead;
a whole file that does not is written entirely in that form, and should that fail too
(a default that depends on another setting), with every setting written out.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from kairos_core import (
    ConfigError,
    GatewayConfig,
    Router,
    config_to_json,
    derived_route_id,
    load_config,
    load_router,
)
from kairos_core._model import input_keys
from pydantic import BaseModel

__all__ = ["canonical_text", "updated_text"]

_WS = " \t\r\n"
_MISSING: Any = object()
#: A new object or list holding only scalars goes on one line if it fits in this.
_LINE = 88
_REVEAL = {"reveal_secrets": True}
_DECODER = json.JSONDecoder()


@dataclass(slots=True)
class _Node:
    """A JSON value in the file: its span, and for a container its entries."""

    start: int
    end: int
    value: Any
    container: str | None = None  # "{" or "[", None for a scalar
    entries: list[_Entry] = field(default_factory=list)
    #: Whitespace before the closing bracket.
    tail: str = ""


@dataclass(slots=True)
class _Entry:
    """An object member (``key`` set) or a list item: where it starts, and the
    whitespace before it."""

    key: str | None
    start: int
    node: _Node
    lead: str
    #: Whitespace between the value and the comma after it (none for the last entry).
    trail: str = ""


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _parse(text: str, i: int) -> _Node:
    opener = text[i]
    if opener not in "{[":
        value, end = _DECODER.raw_decode(text, i)
        return _Node(i, end, value)
    closer = "}" if opener == "{" else "]"
    node = _Node(i, i, None, opener)
    j = i + 1
    while True:
        k = _skip(text, j)
        if text[k] == closer and not node.entries:
            node.tail, node.end = text[j:k], k + 1
            break
        key: str | None = None
        value_at = k
        if opener == "{":
            key, after = json.decoder.scanstring(text, k + 1)  # type: ignore[attr-defined]
            colon = _skip(text, after)
            if text[colon] != ":":
                raise ValueError(f"expected ':' at {colon}")
            value_at = _skip(text, colon + 1)
        child = _parse(text, value_at)
        node.entries.append(_Entry(key, k, child, text[j:k]))
        n = _skip(text, child.end)
        if text[n] == ",":
            node.entries[-1].trail = text[child.end : n]
            j = n + 1
            continue
        if text[n] != closer:
            raise ValueError(f"expected ',' or {closer!r} at {n}")
        node.tail, node.end = text[child.end : n], n + 1
        break
    if opener == "{":
        node.value = {e.key: e.node.value for e in node.entries}
    else:
        node.value = [e.node.value for e in node.entries]
    return node


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (or holds a list of), if exactly one."""
    origin = get_origin(annotation)
    if origin is Annotated or origin is list:
        return _model_of(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        found = [m for m in map(_model_of, get_args(annotation)) if m is not None]
        return found[0] if len(found) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field_names(model: type[BaseModel] | None) -> dict[str, str]:
    """Input key (canonical or alias) -> field name."""
    if model is None:
        return {}
    return {key: name for name in model.model_fields for key in input_keys(model, name)}


def _submodel(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    if model is None or name not in model.model_fields:
        return None
    return _model_of(model.model_fields[name].annotation)


def _identity(value: Any, model: type[BaseModel] | None) -> str | None:
    """What pairs an old list item with a new one, beyond position."""
    if isinstance(value, dict):
        if model is Router:
            rid = _route_identity(value)
            return None if rid is None else json.dumps(rid)
        name = value.get("name")
        return None if name is None else json.dumps(name)
    return json.dumps(value, sort_keys=True)


def _route_identity(route: dict[str, Any]) -> str | None:
    """A route's id (its name, else derived from its methods and path) in dump data."""
    name = route.get("name")
    if isinstance(name, str):
        return name
    methods, path = route.get("methods"), route.get("external_path")
    if not isinstance(methods, list) or not isinstance(path, str):
        return None
    return derived_route_id(map(str, methods), path)


def _pairs(old: list[Any], new: list[Any], model: type[BaseModel] | None) -> dict[int, int]:
    """New index -> old index: same identity first, then the rest in order."""
    first: dict[str, int] = {}
    for i, item in enumerate(old):
        key = _identity(item, model)
        if key is not None:
            first.setdefault(key, i)
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for j, item in enumerate(new):
        key = _identity(item, model)
        i = first.get(key, -1) if key is not None else -1
        if i >= 0 and i not in used:
            pairs[j] = i
            used.add(i)
    rest_old = [i for i in range(len(old)) if i not in used]
    rest_new = [j for j in range(len(new)) if j not in pairs]
    pairs.update(zip(rest_new, rest_old, strict=False))
    return pairs


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class _Writer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.unit = _indent_unit(text)

    def line_indent(self, pos: int) -> str:
        start = self.text.rfind("\n", 0, pos) + 1
        end = start
        while end < len(self.text) and self.text[end] in " \t":
            end += 1
        return self.text[start:end]

    def fresh(self, value: Any, indent: str) -> str:
        """``value`` as new text whose first line is indented by ``indent``."""
        if not isinstance(value, dict | list) or not value:
            return _dump(value)
        scalars = all(not isinstance(v, dict | list) for v in _children(value))
        one_line = _dump(value)
        if scalars and len(indent) + len(one_line) <= _LINE:
            return one_line
        inner = indent + self.unit
        if isinstance(value, dict):
            parts = [f"{_dump(k)}: {self.fresh(v, inner)}" for k, v in value.items()]
            opener, closer = "{", "}"
        else:
            parts = [self.fresh(v, inner) for v in value]
            opener, closer = "[", "]"
        body = ",".join(f"\n{inner}{part}" for part in parts)
        return f"{opener}{body}\n{indent}{closer}"

    def render(
        self,
        node: _Node | None,
        old: Any,
        new: Any,
        minimal: Any,
        model: type[BaseModel] | None,
        indent: str,
        one_line: bool = False,
    ) -> str:
        """The text of a value that was ``old`` (written as ``node``) and is now ``new``.

        ``minimal`` is ``new`` without defaults (``_MISSING``: all of it is default).
        ``one_line``: it sits in an object or list written on one line.
        """
        if node is not None and old == new:
            return self.text[node.start : node.end]
        if node is not None and node.container == "{" and _both(old, new, dict):
            return self._object(node, old, new, minimal, model)
        if node is not None and node.container == "[" and _both(old, new, list):
            return self._list(node, old, new, minimal, model)
        return self._new(new if minimal is _MISSING else minimal, indent, one_line)

    def _new(self, value: Any, indent: str, one_line: bool) -> str:
        return _dump(value) if one_line else self.fresh(value, indent)

    def _multiline(self, node: _Node, new: Any) -> bool:
        """Whether the container's entries go one per line: as in the file, or for an
        empty one (``[]``), as a new one would be written."""
        if node.entries:
            return "\n" in self.text[node.start : node.end]
        indent = self.line_indent(node.start)
        return "\n" in self.fresh(new, indent)

    def _member_indent(self, node: _Node, multiline: bool) -> str:
        for entry in node.entries:
            if "\n" in entry.lead:
                return entry.lead.rpartition("\n")[2]
        indent = self.line_indent(node.start)
        return indent + self.unit if multiline else indent

    def _container(
        self, node: _Node, parts: list[tuple[_Entry | None, str]], multiline: bool, inner: str
    ) -> str:
        """Entries (kept ones with their own lead) between the node's brackets."""
        entries = node.entries
        separator = " " if len(entries) < 2 else entries[1].lead
        if multiline:
            separator = "\n" + inner
        out: list[str] = []
        for index, (entry, text) in enumerate(parts):
            if index == 0:
                lead = entries[0].lead if entries else ("\n" + inner if multiline else "")
            elif entry is not None and entry is not entries[0]:
                lead = entry.lead
            else:
                lead = separator
            trail = "" if entry is None or index == len(parts) - 1 else entry.trail
            out.append(lead + text + trail)
        tail = node.tail if parts else ""
        if multiline and parts and not entries:
            tail = "\n" + self.line_indent(node.start)
        closer = "}" if node.container == "{" else "]"
        return f"{node.container}{','.join(out)}{tail}{closer}"

    def _object(
        self,
        node: _Node,
        old: dict[str, Any],
        new: dict[str, Any],
        minimal: Any,
        model: type[BaseModel] | None,
    ) -> str:
        names = _field_names(model)
        small = minimal if isinstance(minimal, dict) else {}
        multiline = self._multiline(node, minimal)
        indent = self._member_indent(node, multiline)
        parts: list[tuple[_Entry | None, str]] = []
        written: set[str] = set()
        for entry in node.entries:
            assert entry.key is not None
            name = names.get(entry.key, entry.key)
            written.add(name)
            before, after = old.get(name, _MISSING), new.get(name, _MISSING)
            if before == after:
                parts.append((entry, self.text[entry.start : entry.node.end]))
            elif after is not _MISSING:
                child = entry.node
                head = self.text[entry.start : child.start]
                sub = _submodel(model, name)
                value = self.render(
                    child, before, after, small.get(name, after), sub, indent, not multiline
                )
                parts.append((entry, head + value))
        for name, after in new.items():
            if name in written or old.get(name, _MISSING) == after or name not in small:
                continue
            text = self._new(small[name], indent, not multiline)
            parts.append((None, f"{_dump(name)}: {text}"))
        return self._container(node, parts, multiline, indent)

    def _list(
        self,
        node: _Node,
        old: list[Any],
        new: list[Any],
        minimal: Any,
        model: type[BaseModel] | None,
    ) -> str:
        small = minimal if isinstance(minimal, list) and len(minimal) == len(new) else new
        multiline = self._multiline(node, small)
        indent = self._member_indent(node, multiline)
        pairs = _pairs(old, new, model)
        parts: list[tuple[_Entry | None, str]] = []
        for j, after in enumerate(new):
            i = pairs.get(j)
            if i is None:
                parts.append((None, self._new(small[j], indent, not multiline)))
                continue
            entry = node.entries[i]
            text = self.render(entry.node, old[i], after, small[j], model, indent, not multiline)
            if model is Router and not _same_route(text, after):
                text = self._new(small[j], indent, not multiline)
            parts.append((entry, text))
        return self._container(node, parts, multiline, indent)


def _children(value: dict[str, Any] | list[Any]) -> list[Any]:
    return list(value.values()) if isinstance(value, dict) else value


def _both(old: Any, new: Any, kind: type) -> bool:
    return isinstance(old, kind) and isinstance(new, kind)


def _indent_unit(text: str) -> str:
    """The indentation of the file's first indented line (two spaces if none is)."""
    for line in text.splitlines():
        stripped = line.lstrip(" \t")
        if stripped and stripped != line:
            return line[: len(line) - len(stripped)]
    return "  "


def _same_route(text: str, expected: Any) -> bool:
    try:
        router = load_router(json.loads(text))
    except (ValueError, ConfigError):
        return False
    dumped: Any = json.loads(router.model_dump_json(exclude_none=True, context=_REVEAL))
    return bool(dumped == expected)


def full_data(config: GatewayConfig) -> Any:
    """Every setting, defaults included, secrets in clear."""
    return json.loads(config.model_dump_json(exclude_none=True, context=_REVEAL))


def minimal_data(config: GatewayConfig) -> Any:
    """The settings that differ from their defaults, secrets in clear."""
    return json.loads(
        config.model_dump_json(exclude_none=True, exclude_defaults=True, context=_REVEAL)
    )


def canonical_text(config: GatewayConfig, indent: str = "  ") -> str:
    """A new file for ``config``: canonical names, defaults left out."""
    return json.dumps(minimal_data(config), indent=indent, ensure_ascii=False) + "\n"


def _gives(text: str, expected: Any) -> bool:
    try:
        return bool(full_data(load_config(json.loads(text))) == expected)
    except (ValueError, ConfigError):
        return False


def updated_text(text: str | None, old: GatewayConfig, new: GatewayConfig) -> str:
    """The file ``text`` (which gave ``old``) changed to give ``new``, as little as can be.

    With no text (no file yet) or text that cannot be followed, `canonical_text`; should
    even that not load back to ``new``, every setting written out (`config_to_json`).
    """
    expected = full_data(new)
    unit = "  "
    if text is not None:
        unit = _indent_unit(text)
        try:
            start = _skip(text, 0)
            root = _parse(text, start)
            writer = _Writer(text)
            body = writer.render(
                root, full_data(old), expected, minimal_data(new), GatewayConfig, ""
            )
            result = text[:start] + body + text[root.end :]
        except (ValueError, IndexError):
            result = None
        if result is not None and _gives(result, expected):
            return result
    canonical = canonical_text(new, unit)
    if _gives(canonical, expected):
        return canonical
    return config_to_json(new) + "\n"
