"""Who is using this page, and the gateway client that acts for them.

With token login (``KAIROS_UI_LOGIN=token``) each browser session that logged in with
a gateway admin token gets its own `KairosClient` carrying that token. The token lives
in that client only, in this process's memory: never in the browser, a URL or
NiceGUI's storage (``app.storage.user`` is written to disk as JSON; it holds the
name and role only, for the header). So a restart of the UI ends every token session.

A session is found from the NiceGUI request of the page being served, which NiceGUI
sets for page builders, event handlers and the timers and tasks a page starts.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from kairos_client import AiohttpTransport, KairosClient, KairosClientError, RawResponse, RawStream
from kairos_core import AdminRole
from nicegui import ui
from nicegui.storage import request_contextvar

__all__ = [
    "MAX_SESSIONS",
    "EndingTransport",
    "Session",
    "SessionEnded",
    "Sessions",
    "session_id",
]

#: Logged-in sessions kept at once; the oldest login ends when one more logs in.
MAX_SESSIONS = 256


class SessionEnded(KairosClientError):
    """The page belongs to no logged-in token session (logged out, or the UI restarted)."""

    def __init__(self) -> None:
        super().__init__("Your session has ended: log in again.")


class EndingTransport(AiohttpTransport):
    """A transport that refuses every call once closed. A page may still hold the
    client of a session that logged out (or was evicted); it must not go on using that
    token, and a plain `AiohttpTransport` would open a new connection pool instead."""

    ended = False

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> RawResponse:
        if self.ended:
            raise SessionEnded
        return await super().send(method, url, headers, body)

    @asynccontextmanager
    async def stream(
        self, url: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[RawStream]:
        if self.ended:
            raise SessionEnded
        async with super().stream(url, headers, read_timeout=read_timeout) as raw:
            yield raw

    async def aclose(self) -> None:
        self.ended = True
        await super().aclose()


@dataclass(frozen=True, slots=True)
class Session:
    """One login: the client holding its token, and the token's name and role."""

    client: KairosClient
    name: str
    role: AdminRole


def session_id() -> str | None:
    """The id of the browser session being served (the key of ``app.storage.user``),
    or None outside any page."""
    request = request_contextvar.get()
    if request is None:
        try:
            request = ui.context.client.request
        except RuntimeError:  # no page in this task
            return None
    if request is None or "session" not in request.scope:
        return None
    found = request.session.get("id")
    return found if isinstance(found, str) else None


class Sessions:
    """The token sessions of this process, by browser session id."""

    def __init__(self, make_client: Callable[[str], KairosClient]) -> None:
        self._make_client = make_client
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    async def open(self, sid: str, token: str) -> Session:
        """Ask the gateway who ``token`` is (`GET /api/whoami`) and, when it accepts
        it, make it the session's; raises the client's error otherwise."""
        client = self._make_client(token)
        try:
            who = await client.whoami()
        except BaseException:
            await client.aclose()
            raise
        session = Session(client, who.name, who.role)
        await self.end(sid)
        self._by_id[sid] = session
        while len(self._by_id) > MAX_SESSIONS:
            _, oldest = self._by_id.popitem(last=False)
            await oldest.client.aclose()
        return session

    def get(self, sid: str | None) -> Session | None:
        return None if sid is None else self._by_id.get(sid)

    def current(self) -> Session:
        """The session of the page being served; `SessionEnded` when there is none."""
        session = self.get(session_id())
        if session is None:
            raise SessionEnded
        return session

    async def end(self, sid: str | None) -> None:
        """Log ``sid`` out: its client (and with it the token) is dropped."""
        session = None if sid is None else self._by_id.pop(sid, None)
        if session is not None:
            await session.client.aclose()

    async def aclose(self) -> None:
        sessions = list(self._by_id.values())
        self._by_id.clear()
        await asyncio.gather(*(s.client.aclose() for s in sessions))
