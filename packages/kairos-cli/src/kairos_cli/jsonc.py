"""JSON files with ``//`` comments (JSONC), as `kairos config generate` writes them.

The gateway reads plain JSON only; the CLI reads both. Comments are removed with
their text but not their line breaks, so a JSON syntax error still names the right
line of the file.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from kairos_core import MAX_CONFIG_BYTES, ConfigError, FieldError, GatewayConfig, load_config
from kairos_core import load_config_file as _load_plain_file

__all__ = ["example_config", "load_config_file", "parse_json", "strip_comments"]

# A JSON string (kept as is: "http://x" holds no comment) or a // comment to its line end.
_STRING_OR_COMMENT = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*')


def strip_comments(text: str) -> str:
    """``text`` without ``//`` comments outside strings."""
    return _STRING_OR_COMMENT.sub(lambda m: m[0] if m[0].startswith('"') else "", text)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json(text: str) -> Any:
    """Parse JSON (comments allowed) as the gateway does: a key given twice is an error.
    Raises `ConfigError` naming the line and column of a syntax error."""
    try:
        return json.loads(strip_comments(text), object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ConfigError([FieldError((), message)]) from None
    except ValueError as exc:
        raise ConfigError([FieldError((), f"invalid JSON: {exc}")]) from None


def load_config_file(path: Path, *, redacted: bool = False) -> tuple[GatewayConfig, bool]:
    """Read and validate a config file; returns it and whether it had comments.

    A file without comments goes through kairos-core's own loader, so what passes
    here passes the gateway's loader too. ``redacted``: the file may hold ``"***"``
    for a secret (a dump of a gateway's configuration; see `load_config`). Raises
    `ConfigError`.
    """
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return _load_plain_file(path), False  # it reports the problem as the gateway would
    if len(raw) > MAX_CONFIG_BYTES:
        return _load_plain_file(path), False
    commented = strip_comments(text) != text
    if not commented and not redacted:
        return _load_plain_file(path), False
    return load_config(parse_json(text), redacted=redacted), commented


def example_config(*, comments: bool) -> str:
    """The example configuration: JSONC with a comment on each setting, or plain JSON
    (the same data)."""
    text = resources.files(__package__).joinpath("example.jsonc").read_text("utf-8")
    if comments:
        return text
    return json.dumps(parse_json(text), indent=2, ensure_ascii=False) + "\n"
