"""Small building blocks shared by several pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import app, ui

from .format import DASH

__all__ = ["ChartCard", "Stat", "dark_mode_on"]


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


def dark_mode_on() -> bool:
    """Whether this browser has dark mode on (the header's toggle, kept per user)."""
    try:
        return bool(app.storage.user.get("dark_mode"))
    except RuntimeError:  # no user storage (outside a page): light
        return False


class ChartCard:
    """A card with a title, a caption (the step, the source) and an ECharts chart.

    The title and caption are page text rather than ECharts' own title, so they take
    the page's colours in dark mode and the legend can never cover them. ``build``
    makes the options for given data and mode (`charts`); `show` draws new data in the
    current mode, so a switch of mode shows at the next refresh.
    """

    def __init__(
        self, title: str, marker: str, build: Callable[..., dict[str, Any]], *args: Any
    ) -> None:
        self.build = build
        with ui.card().classes("p-2 gap-0"):
            with ui.row().classes("w-full items-baseline gap-2 px-2 no-wrap"):
                ui.label(title).classes("text-sm font-semibold").mark(f"{marker}-title")
                ui.space()
                self.caption = ui.label("").classes("text-xs opacity-70 text-right")
                self.caption.mark(f"{marker}-caption").props(f'data-testid="{marker}-caption"')
            self.chart = ui.echart(build(*args, dark=dark_mode_on())).classes("w-full h-64")
            self.chart.mark(marker)

    def show(self, *args: Any, caption: str | None = None) -> None:
        """Replace the chart's data (the arguments of ``build``) and its caption."""
        options = self.build(*args, dark=dark_mode_on())
        self.chart.options.clear()
        self.chart.options.update(options)
        self.chart.update()
        if caption is not None:
            self.caption.text = caption
