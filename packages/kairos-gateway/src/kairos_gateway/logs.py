"""Application logging (start-up, errors, state changes) in JSON or text.

Access lines do not go through here; see `accesslog`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["json", "text"]

_LEVELS = {"trace": "DEBUG", "debug": "DEBUG", "info": "INFO", "warn": "WARNING"}


def parse_level(value: str | None) -> int:
    """A level name such as `info` or `DEBUG`; `RUST_LOG`-style `kairos=debug,info` too.

    For comma-separated directives the last recognisable level wins, whether bare or
    `module=level` (there are no per-module levels). Unknown values fall back to INFO
    rather than refusing to start.
    """
    if not value:
        return logging.INFO
    candidates = [part.split("=")[-1] for part in value.split(",") if part]
    for name in reversed(candidates):
        name = name.strip().lower()
        name = _LEVELS.get(name, name.upper())
        level = logging.getLevelName(name)
        if isinstance(level, int):
            return level
    return logging.INFO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            out.update(extra)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict) and extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        return line


def configure(fmt: LogFormat, level: int) -> None:
    """Route the root logger to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Tornado logs every malformed request at INFO and every 4xx/5xx at WARNING through
    # its own access logger, which Kairos does not use.
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    # watchfiles reports every filesystem event in the watched directory at INFO.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
