"""The errors `KairosClient` raises, one tree under `KairosClientError`::

    KairosClientError
    ├── ApiError                 the gateway answered 4xx/5xx (.status, .problem)
    │   ├── BadRequest           400 malformed JSON or query parameter
    │   ├── Unauthorized         401 admin token missing or wrong
    │   ├── Forbidden            403 no admin token set and the caller is not on loopback
    │   ├── NotFound             404 no such route, section or endpoint
    │   ├── Conflict             409 route exists / several share the path / file edited
    │   ├── PreconditionFailed   412 If-Match named a stale configuration version
    │   ├── ValidationFailed     422 invalid route or config (.errors, with field paths)
    │   ├── RateLimited          429 (.retry_after_s)
    │   └── ServerError          5xx (e.g. 503 not_persisted)
    ├── GatewayUnavailable       no answer: refused, reset, DNS (also a ConnectionError)
    │   └── GatewayTimeout       no answer in time (also a TimeoutError)
    └── InvalidResponse          an answer that is not what the API documents

Named `KairosClientError`, not `KairosError`: `kairos_core.KairosError` is the gateway's
own error tree (errors it renders as responses); a client-side class of the same name
would make ``except KairosError`` catch different things depending on the import.
"""

from __future__ import annotations

from typing import ClassVar

from kairos_core.api import FieldErrorBody, Problem

__all__ = [
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "GatewayTimeout",
    "GatewayUnavailable",
    "InvalidResponse",
    "KairosClientError",
    "NotFound",
    "PreconditionFailed",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "ValidationFailed",
    "error_for",
]


class KairosClientError(Exception):
    """Base of every error `KairosClient` raises."""


class ApiError(KairosClientError):
    """The gateway answered with an error status; ``problem`` is its RFC 9457 body.

    A body that is not a problem document (a proxy in between, say) is turned into one
    with ``type`` ``"about:blank"`` and the start of the body as ``detail``.
    """

    #: The status this class stands for (None: any, see `error_for`).
    status_code: ClassVar[int | None] = None

    def __init__(self, status: int, problem: Problem) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.title}: {problem.detail}")

    @property
    def detail(self) -> str:
        return self.problem.detail

    @property
    def request_id(self) -> str:
        """The gateway's request id: quote it when reading the gateway's logs."""
        return self.problem.request_id


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class PreconditionFailed(ApiError):
    """The configuration changed since the ETag sent as ``if_match``: fetch it again."""

    status_code = 412


class ValidationFailed(ApiError):
    """The route or configuration is invalid; ``errors`` names each field by path."""

    status_code = 422

    @property
    def errors(self) -> list[FieldErrorBody]:
        return list(self.problem.errors or [])

    def __str__(self) -> str:
        lines = [super().__str__()]
        lines += [f"  {e.path or '(root)'}: {e.message}" for e in self.errors]
        return "\n".join(lines)


class RateLimited(ApiError):
    status_code = 429

    @property
    def retry_after_s(self) -> float | None:
        value = (self.problem.model_extra or {}).get("retry_after_s")
        return float(value) if isinstance(value, int | float) else None


class ServerError(ApiError):
    """Any 5xx answer (``problem.type`` tells which, e.g. ``not_persisted``)."""


class GatewayUnavailable(KairosClientError, ConnectionError):
    """The gateway could not be reached: connection refused or reset, name not found.

    Reads (GET) are retried a few times before this is raised; writes never are.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)  # one argument: OSError's (errno, strerror) form unused


class GatewayTimeout(GatewayUnavailable, TimeoutError):
    """No complete answer within the client's timeout. For a change (POST, PUT, DELETE)
    the outcome is unknown: read the state back before trying again."""


class InvalidResponse(KairosClientError):
    """The gateway's answer does not have the documented shape (wrong server, or a
    client and gateway of incompatible versions)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PreconditionFailed,
        ValidationFailed,
        RateLimited,
    )
    if cls.status_code is not None
}


def error_for(status: int, problem: Problem) -> ApiError:
    """The `ApiError` subclass for ``status`` (`ServerError` for any 5xx)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    return cls(status, problem)
