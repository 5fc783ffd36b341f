"""Client-side TLS contexts for https backends, shared per (verify, CA file, client
certificate): building one costs milliseconds.

A context is built once and kept; at most once a second, when it is asked for, its
files are checked (modification time, size, inode) and a changed CA bundle or client
certificate is loaded into a new context for new connections. A file that fails to
load then keeps the previous context serving, and the error is logged once.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass

from ..pem import PemError, fingerprint, load_ca_file, load_chain
from .endpoint import Endpoint
from .errors import UpstreamTLSError

__all__ = ["TlsFileError", "client_ssl_context"]

log = logging.getLogger("kairos.gateway")

#: How often, at most, a context's files are checked for changes.
RECHECK_S = 1.0

_Key = tuple[bool, str | None, str | None, str | None]


class TlsFileError(UpstreamTLSError):
    """A backend's CA bundle or client certificate cannot be used; ``field`` is the
    backend setting that names the file (``tls_ca_file``, ``tls_cert_file``, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.detail = message


@dataclass(slots=True)
class _Cached:
    context: ssl.SSLContext
    stamp: tuple[object, ...]
    checked: float


_contexts: dict[_Key, _Cached] = {}


def _build_context(key: _Key) -> ssl.SSLContext:
    verify, ca_file, cert_file, key_file = key
    if verify and ca_file is not None:
        # The CA file replaces the system trust store.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        load_ca_file(ctx, ca_file, field="tls_ca_file")
    else:
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    if cert_file is not None and key_file is not None:
        load_chain(ctx, cert_file, key_file, cert_field="tls_cert_file", key_field="tls_key_file")
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The shared ``SSLContext`` for ``endpoint``.

    Verification (chain + hostname) is on unless ``endpoint.tls_verify`` is false; then the
    certificate is not checked at all. ``tls_ca_file`` replaces the system trust store.
    ``tls_cert_file`` / ``tls_key_file`` are presented when the backend asks for a
    client certificate. Raises :class:`TlsFileError` when a file cannot be loaded and
    there is no earlier context for the endpoint's settings.
    """
    ca_file = endpoint.tls_ca_file if endpoint.tls_verify else None
    key: _Key = (endpoint.tls_verify, ca_file, endpoint.tls_cert_file, endpoint.tls_key_file)
    cached = _contexts.get(key)
    now = time.monotonic()
    if cached is not None and now - cached.checked < RECHECK_S:
        return cached.context
    files = tuple(path for path in key[1:] if isinstance(path, str))
    stamp = fingerprint(files)
    if cached is not None:
        cached.checked = now
        if stamp == cached.stamp:
            return cached.context
    try:
        context = _build_context(key)
    except PemError as exc:
        if cached is None:
            raise TlsFileError(exc.field, exc.message) from None
        cached.stamp = stamp  # logged once per change of the files
        log.error(
            "backend TLS files changed but cannot be loaded; still using the previous ones",
            extra={"fields": {"backend": endpoint.label, "error": exc.message}},
        )
        return cached.context
    except ssl.SSLError as exc:
        raise TlsFileError("tls_ca_file", f"cannot set up TLS: {exc}") from None
    _contexts[key] = _Cached(context, stamp, now)
    return context
