"""The client certificate's subject for the backend (``listen.tls.client_subject_header``).

On every route, whether or not TLS is on: a client's own header of that name is
removed (else a client could claim any identity), and when the client presented a
certificate that verified against ``listen.tls.client_ca_file``, the header is set to
the certificate's subject as an RFC 4514 string (``CN=alice,O=Example``).
"""

from __future__ import annotations

import functools

from ..chain import Policy, Request, UpstreamRequest

__all__ = ["ClientCertificate", "subject_of"]


@functools.lru_cache(maxsize=1024)
def subject_of(der: bytes) -> str:
    """The RFC 4514 subject of a DER certificate, with control and non-ASCII
    characters hex-escaped (``\\0A``), so it is always a valid header value."""
    from cryptography import x509

    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    if subject.isascii() and subject.isprintable():
        return subject
    out = []
    for char in subject:
        if char.isascii() and char.isprintable():
            out.append(char)
        else:
            out.extend(f"\\{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


class ClientCertificate(Policy):
    name = "client_cert"
    priority = 1600

    __slots__ = ("header", "verify")

    def __init__(self, header: str, *, verify: bool) -> None:
        self.header = header
        #: Client certificates are verified at the listener (else none is asked for).
        self.verify = verify

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        header = self.header
        if header in request.headers:
            lower = header.lower()
            upstream.headers = [(k, v) for k, v in upstream.headers if k.lower() != lower]
        if self.verify:
            der = request.peer_certificate
            if der:
                upstream.headers.append((header, subject_of(der)))
