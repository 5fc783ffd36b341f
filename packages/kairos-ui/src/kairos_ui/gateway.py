"""The app's one link to the gateway: the `KairosClient` of each page, its role,
and readable errors.

Every page talks to the gateway through `Gateway.client` (kairos-client), never over
HTTP of its own, and turns any `KairosClientError` into a one-line message with
`describe`; no traceback ever reaches the page. With token login the client is the
logged-in session's (`session.Sessions`); otherwise one client with
``KAIROS_ADMIN_TOKEN`` serves every page.
"""

from __future__ import annotations

import json

from kairos_client import (
    ApiError,
    Conflict,
    Forbidden,
    GatewayTimeout,
    GatewayUnavailable,
    InvalidResponse,
    KairosClient,
    KairosClientError,
    NotFound,
    PreconditionFailed,
    Transport,
    Unauthorized,
    ValidationFailed,
)
from kairos_core import AdminRole, FieldErrorBody, role_allows

from .session import EndingTransport, SessionEnded, Sessions
from .settings import UiSettings

__all__ = ["CHANGED_ON_DISK", "Gateway", "describe", "field_message", "is_outage"]

#: What the UI says when the gateway refuses a change because its config file was
#: edited by hand and that edit is not live yet (the gateway's own text names its API).
CHANGED_ON_DISK = (
    "The config file was edited on disk and that edit is not live yet: apply it with "
    "Reload from file on the Configuration page (or undo the edit), then try again."
)
_CHANGED_ON_DISK_DETAIL = "was changed on disk since it was loaded"


class Gateway:
    """Owns the `KairosClient` the pages use: one shared keep-alive client, or with
    token login one per logged-in session (`sessions`)."""

    def __init__(self, settings: UiSettings) -> None:
        self.url = settings.gateway_url
        self._timeout = settings.gateway_timeout_s
        # Closed when the app stops; a page still refreshing then is refused rather
        # than given a new connection pool that nobody would close.
        self._shared = self._client(settings.admin_token or "", EndingTransport())
        #: The sessions of token or user logins (None: every page uses the shared client).
        self.sessions = (
            Sessions(lambda token: self._client(token, EndingTransport()))
            if settings.personal_login
            else None
        )
        #: The shared token's role, once the gateway has said it (`learn_role`).
        self.shared_role: AdminRole | None = None

    def _client(self, token: str, transport: Transport | None = None) -> KairosClient:
        return KairosClient(
            self.url,
            token=token,
            transport=transport,
            timeout=self._timeout,
            retries=0,  # live pages poll again soon anyway; a retry would only delay the banner
        )

    @property
    def client(self) -> KairosClient:
        """The client for the page being served (`SessionEnded` for a page of no
        token session)."""
        if self.sessions is None:
            return self._shared
        return self.sessions.current().client

    def role(self) -> AdminRole:
        """What the page's token may do. The shared token's role is ``admin`` until the
        gateway has said otherwise, as before roles existed; a page of no token
        session may only look."""
        if self.sessions is None:
            return self.shared_role or "admin"
        try:
            return self.sessions.current().role
        except SessionEnded:
            return "viewer"

    def allows(self, needed: AdminRole) -> bool:
        """May this page's token make calls that need ``needed``?"""
        return role_allows(self.role(), needed)

    async def learn_role(self) -> None:
        """Ask the gateway the shared token's role (kept once known; a gateway too old
        to answer `GET /api/whoami` leaves it ``admin``)."""
        if self.sessions is not None or self.shared_role is not None:
            return
        try:
            self.shared_role = (await self._shared.whoami()).role
        except NotFound:
            self.shared_role = "admin"
        except KairosClientError:
            pass  # not known yet: asked again at the next login or start of a page

    async def aclose(self) -> None:
        await self._shared.aclose()
        if self.sessions is not None:
            await self.sessions.aclose()


def is_outage(exc: KairosClientError) -> bool:
    """The gateway gave no usable answer at all (down, unreachable, not a gateway)."""
    return isinstance(exc, GatewayUnavailable | InvalidResponse)


def field_message(error: FieldErrorBody) -> str:
    """A field error as the gateway's other tools print it: ``must be > 0 (got -1)``."""
    if error.value is None:
        return error.message
    shown = json.dumps(error.value, ensure_ascii=False)
    return f"{error.message} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"


def describe(exc: KairosClientError, url: str) -> str:
    """One line for a person: what went wrong and, where known, what to do."""
    if isinstance(exc, GatewayTimeout):
        return f"The gateway at {url} did not answer in time."
    if isinstance(exc, GatewayUnavailable):
        return f"The gateway at {url} cannot be reached. Retrying."
    if isinstance(exc, InvalidResponse):
        return f"{url} did not answer like a Kairos gateway: {exc}"
    if isinstance(exc, Unauthorized):
        return "The gateway refused the admin token (401): check KAIROS_ADMIN_TOKEN."
    if isinstance(exc, Forbidden) and " role" in exc.detail:
        # The gateway names the role the call needs and the one the token has.
        return f"Not allowed (403): {exc.detail}."
    if isinstance(exc, Forbidden):
        return (
            "The gateway has no admin token and accepts management calls from loopback "
            "only (403): set an admin token on both sides."
        )
    if isinstance(exc, PreconditionFailed):
        return "Someone else changed the configuration in the meantime: reload and try again."
    if isinstance(exc, ValidationFailed):
        lines = [f"{e.path or '(route)'}: {field_message(e)}" for e in exc.errors]
        return "; ".join(lines) or exc.detail
    if isinstance(exc, Conflict):
        if _CHANGED_ON_DISK_DETAIL in exc.detail:
            return CHANGED_ON_DISK
        return exc.detail
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.problem.title}: {exc.detail}"
    return str(exc)
