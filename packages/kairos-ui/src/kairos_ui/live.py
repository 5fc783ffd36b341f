"""Live updates: a page follows the gateway's event stream (`GET /api/events`).

Pages keep polling the management API for their data; the stream only tells them when
to look again. A page calls `follow` with what to run on a configuration event
(``config.*``) and on a backend event (``backend.*``), so a change made elsewhere (the
CLI, another browser, an edit of the config file, another node) shows at once instead
of at the next poll. The header shows the stream's state (`indicator`, placed by the
layout): *live*, or *reconnecting…* while the stream is down. The stream is retried
every few seconds; after a reconnection (events may have been missed) both refreshes
run once.

One stream per open page (per browser tab); it ends when the page is closed. The UI
never needs more than the viewer role for it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

from kairos_client import GatewayEvent, KairosClientError
from nicegui import background_tasks, ui
from nicegui.client import Client

from .gateway import Gateway

__all__ = ["RETRY_S", "LiveFeed", "follow", "indicator"]

log = logging.getLogger("kairos_ui")

#: Seconds between two attempts to open the stream while it is down.
RETRY_S = 2.0

Refresh = Callable[[], Awaitable[None] | None]

#: The header's indicator of each page (set by `indicator`, found by `follow`).
_INDICATORS: weakref.WeakKeyDictionary[Client, ui.label] = weakref.WeakKeyDictionary()


def indicator() -> ui.label:
    """The stream's state in the header; hidden until the page `follow`s the stream."""
    label = ui.label("").classes("text-xs px-2 py-0.5 rounded").mark("live-indicator")
    label.props("data-testid=live-indicator")
    label.visible = False
    _INDICATORS[ui.context.client] = label
    return label


class _Refresher:
    """Runs a page's refresh, one at a time: events arriving meanwhile run it once more
    afterwards, not once each."""

    def __init__(self, refresh: Refresh) -> None:
        self._refresh = refresh
        self._running = False
        self._again = False

    async def __call__(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        try:
            while True:
                self._again = False
                result = self._refresh()
                if result is not None:
                    await result
                if not self._again:
                    return
        finally:
            self._running = False


class LiveFeed:
    """One page's subscription (see the module docstring); `state` is ``connecting``,
    ``live`` or ``reconnecting``."""

    def __init__(
        self,
        gateway: Gateway,
        label: ui.label | None,
        on_config: Refresh | None,
        on_backend: Refresh | None,
    ) -> None:
        self.gateway = gateway
        self.label = label
        self.on_config = None if on_config is None else _Refresher(on_config)
        self.on_backend = None if on_backend is None else _Refresher(on_backend)
        self.state = "connecting"
        self.task: asyncio.Task[None] | None = None
        self._show("connecting")

    def _show(self, state: str) -> None:
        self.state = state
        label = self.label
        if label is None:
            return
        label.visible = True
        label.text = {"live": "● live", "connecting": "connecting…"}.get(state, "reconnecting…")
        label.classes(
            replace="text-xs px-2 py-0.5 rounded "
            + ("bg-green-700 text-white" if state == "live" else "bg-amber-600 text-white")
        )
        hint = (
            "Changes made elsewhere show at once"
            if state == "live"
            else "The gateway's event stream is down: pages refresh at their poll interval"
        )
        label.props(f'title="{hint}"')

    async def _refresh_all(self) -> None:
        for refresher in (self.on_config, self.on_backend):
            if refresher is not None:
                await refresher()

    async def _dispatch(self, event: GatewayEvent) -> None:
        kind = event.type
        if kind.startswith("config.") and self.on_config is not None:
            await self.on_config()
        elif kind.startswith("backend.") and self.on_backend is not None:
            await self.on_backend()
        elif kind == "reset":
            await self._refresh_all()

    async def run(self) -> None:
        """Follow the stream until cancelled (the page closed), reconnecting."""
        last: str | None = None
        missed = False
        while True:
            try:
                async with self.gateway.client.events(last_event_id=last) as stream:
                    self._show("live")
                    if missed:
                        await self._refresh_all()
                    async for event in stream:
                        last = stream.last_event_id
                        await self._dispatch(event)
            except KairosClientError as exc:
                log.debug("event stream down: %s", exc)
            self._show("reconnecting")
            missed = True
            await asyncio.sleep(RETRY_S)


def follow(
    gateway: Gateway,
    *,
    on_config: Refresh | None = None,
    on_backend: Refresh | None = None,
) -> LiveFeed:
    """Follow the event stream for the page being built: run ``on_config`` on each
    configuration event and ``on_backend`` on each backend event (each at most one at
    a time), and show the stream's state in the header. Stops when the page closes."""
    client = ui.context.client
    feed = LiveFeed(gateway, _INDICATORS.get(client), on_config, on_backend)
    task = background_tasks.create(feed.run(), name="kairos live events", context=ui.context.slot)
    feed.task = task
    client.on_delete(task.cancel)
    return feed
