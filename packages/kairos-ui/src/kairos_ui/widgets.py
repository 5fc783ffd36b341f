"""Small building blocks shared by several pages."""

from __future__ import annotations

from typing import Any

from nicegui import ui

from .format import DASH

__all__ = ["Stat", "chart", "set_chart"]


class Stat:
    """A card with a caption and one big value; ``marker`` finds it in tests."""

    def __init__(self, caption: str, marker: str, hint: str | None = None) -> None:
        with ui.card().classes("gap-0 p-3") as card:
            ui.label(caption).classes("text-xs uppercase opacity-70")
            self.value = ui.label(DASH).classes("text-2xl font-semibold")
            self.value.mark(f"stat-{marker}").props(f"data-testid=stat-{marker}")
        if hint:
            card.tooltip(hint)

    def set(self, text: str) -> None:
        self.value.text = text


def chart(options: dict[str, Any], marker: str) -> ui.echart:
    return ui.echart(options).classes("w-full h-64").mark(marker)


def set_chart(element: ui.echart, options: dict[str, Any]) -> None:
    """Replace a chart's options in place and send them to the browser."""
    element.options.clear()
    element.options.update(options)
    element.update()
