"""Small helpers for driving the simulated `User`."""

from __future__ import annotations

from typing import Any

from nicegui import ui
from nicegui.testing import User


def element(user: User, marker: str) -> Any:
    """The one element with ``marker`` (fails when there is none or several)."""
    found = user.find(marker=marker).elements
    assert len(found) == 1, f"{len(found)} elements marked {marker!r}"
    return next(iter(found))


def fill(user: User, marker: str, value: Any) -> None:
    """Set an input's value as a person typing it would."""
    target = element(user, marker)
    assert isinstance(target, ui.element)
    target.value = value  # type: ignore[attr-defined]


def text(user: User, marker: str) -> str:
    return str(element(user, marker).text)
