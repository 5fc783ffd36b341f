"""Errors only the management API raises, in the core error tree (`KairosError`)::

KairosError
├── Conflict               409 conflict
├── PreconditionFailed     412 precondition_failed
├── UnsupportedMediaType   415 unsupported_media_type
└── ServiceUnavailable
    └── NotPersisted       503 not_persisted
"""

from __future__ import annotations

from kairos_core import KairosError, ServiceUnavailable

from ..messages import UnsupportedMediaType


class Conflict(KairosError):
    """The change collides with the current state (an existing route, an edited file)."""

    status = 409
    type = "conflict"
    title = "Conflict"


class PreconditionFailed(KairosError):
    """``If-Match`` named a configuration version that is no longer current."""

    status = 412
    type = "precondition_failed"
    title = "Precondition failed"


class NotPersisted(ServiceUnavailable):
    """The config file could not be written, so the change was not applied either."""

    type = "not_persisted"
    title = "Change not persisted"


__all__ = ["Conflict", "NotPersisted", "PreconditionFailed", "UnsupportedMediaType"]
