"""Client-side TLS contexts, cached per (verify, CA file): building one costs milliseconds."""

from __future__ import annotations

import functools
import ssl

from .endpoint import Endpoint
from .errors import UpstreamTLSError

__all__ = ["client_ssl_context"]


@functools.cache
def _build_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context(cafile=ca_file)
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The shared ``SSLContext`` for ``endpoint``.

    Verification (chain + hostname) is on unless ``endpoint.tls_verify`` is false; then the
    certificate is not checked at all. ``tls_ca_file`` replaces the system trust store.
    Raises :class:`UpstreamTLSError` when the CA file cannot be loaded.
    """
    ca_file = endpoint.tls_ca_file if endpoint.tls_verify else None
    try:
        return _build_context(endpoint.tls_verify, ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamTLSError(f"cannot load TLS CA file {ca_file!r}: {exc}") from exc
