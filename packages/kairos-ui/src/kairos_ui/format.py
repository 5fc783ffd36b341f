"""How numbers are shown: pure functions, one place."""

from __future__ import annotations

import re

__all__ = ["DASH", "count", "duration", "error_text", "ms", "percent", "rate", "step"]

#: Shown for a value that does not exist yet (no requests, no samples).
DASH = "\u2013"


def count(value: int) -> str:
    """``12345`` -> ``"12,345"``."""
    return f"{value:,}"


def rate(value: float) -> str:
    """Requests per second."""
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def percent(value: float | None) -> str:
    """A ratio 0..1 as a percentage; ``None`` (no requests yet) as a dash."""
    if value is None:
        return DASH
    return f"{value * 100:.1f} %" if value < 1 else "100 %"


def ms(value: float | None) -> str:
    """Milliseconds; ``None`` (no samples) as a dash."""
    if value is None:
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def duration(seconds: float) -> str:
    """An uptime: ``"3 d 4 h"``, ``"2 h 5 min"``, ``"4 min 2 s"``, ``"12 s"``."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def step(seconds: float) -> str:
    """A chart's step: ``"10 s"``, ``"1 min"``, ``"4 min"``, ``"1 h"``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")


def error_text(raw: str) -> str:
    """An error the gateway passed on from the OS, for people:
    ``"[Errno 111] Connection refused"`` -> ``"connection refused"``."""
    text = _ERRNO.sub("", raw.strip())
    return text[:1].lower() + text[1:] if text[1:2].islower() else text
