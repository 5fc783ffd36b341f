"""The app's one link to the gateway: a shared `KairosClient` and readable errors.

Every page talks to the gateway through `Gateway.client` (kairos-client), never over
HTTP of its own, and turns any `KairosClientError` into a one-line message with
`describe`; no traceback ever reaches the page.
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
    PreconditionFailed,
    Unauthorized,
    ValidationFailed,
)
from kairos_core import FieldErrorBody

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
    """Owns the `KairosClient` the pages share (one keep-alive session for the app)."""

    def __init__(self, settings: UiSettings) -> None:
        self.url = settings.gateway_url
        self.client = KairosClient(
            settings.gateway_url,
            token=settings.admin_token or "",
            timeout=settings.gateway_timeout_s,
            retries=0,  # live pages poll again soon anyway; a retry would only delay the banner
        )

    async def aclose(self) -> None:
        await self.client.aclose()


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
