"""`ListenConfig`: how the proxy port is served (TLS termination, an HTTP redirect).

Read at start-up, like ``admin.listen``: a reload that changes this block is logged and
takes effect on the next start, except the certificate files (``cert_file``,
``key_file``, ``certificates``), whose contents the gateway reloads while serving.

Which files exist and whether a key fits its certificate is judged by the gateway at
start-up (`kairos-gateway --check` too); this module only checks the shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ._model import KairosModel
from .admin import parse_listen

__all__ = [
    "DEFAULT_CLIENT_SUBJECT_HEADER",
    "ClientCertMode",
    "ListenConfig",
    "TlsCertificate",
    "TlsConfig",
]

#: The request header that carries a verified client certificate's subject upstream.
DEFAULT_CLIENT_SUBJECT_HEADER = "X-Client-Cert-Subject"

ClientCertMode = Literal["off", "optional", "required"]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A DNS name, or one leading wildcard label ("*.example.com").
_SERVER_NAME = re.compile(r"(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?\.)*[A-Za-z0-9-]+")


def _file(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a file path")
    return value


class TlsCertificate(KairosModel):
    """One certificate chain and its private key, served to the names it covers."""

    #: PEM file: the server certificate first, then any intermediates.
    cert_file: str
    #: PEM file with the private key (unencrypted).
    key_file: str
    #: SNI names this certificate answers for; omitted: the DNS names in its
    #: subjectAltName. ``*.example.com`` covers one label.
    server_names: list[str] | None = None

    @field_validator("cert_file", "key_file")
    @classmethod
    def _files(cls, value: str) -> str:
        return _file(value)

    @field_validator("server_names")
    @classmethod
    def _names(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("must name at least one server name (or be left out)")
        out = []
        for value in values:
            if not _SERVER_NAME.fullmatch(value):
                raise ValueError(f"{value!r} is not a DNS name (a leading '*.' label is allowed)")
            out.append(value.lower())
        return out


class TlsConfig(KairosModel):
    """TLS termination on the proxy port.

    Give ``cert_file`` and ``key_file`` (the default certificate, served when the
    client's SNI names no other), ``certificates`` (chosen by SNI; the first is the
    default when ``cert_file`` is not given), or both.
    """

    cert_file: str | None = None
    key_file: str | None = None
    certificates: list[TlsCertificate] = Field(default_factory=list)
    #: Oldest protocol version accepted.
    min_version: Literal["1.2", "1.3"] = "1.2"
    #: PEM bundle of the CAs that sign client certificates; turns verification on.
    client_ca_file: str | None = None
    #: ``required``: no handshake without a valid client certificate; ``optional``: a
    #: certificate, when sent, must be valid. Default: ``required`` with a
    #: ``client_ca_file``, else ``off``.
    client_cert: ClientCertMode | None = None
    #: Carries the verified client certificate's subject (RFC 4514) to the backend;
    #: a client's own header of this name is always removed.
    client_subject_header: str = DEFAULT_CLIENT_SUBJECT_HEADER

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _files(cls, value: str | None) -> str | None:
        return None if value is None else _file(value)

    @field_validator("client_subject_header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid header name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give 'cert_file' and 'key_file' together")
        if self.cert_file is None and not self.certificates:
            raise ValueError("needs a certificate: 'cert_file' and 'key_file', or 'certificates'")
        if self.client_cert in ("optional", "required") and self.client_ca_file is None:
            raise ValueError(
                f"client_cert {self.client_cert!r} needs 'client_ca_file' (the CAs to "
                "verify client certificates with)"
            )
        if self.client_cert == "off" and self.client_ca_file is not None:
            raise ValueError("'client_ca_file' has no use with client_cert 'off'; remove one")
        return self

    @property
    def client_verification(self) -> ClientCertMode:
        """The effective client-certificate mode."""
        if self.client_cert is not None:
            return self.client_cert
        return "off" if self.client_ca_file is None else "required"

    def all_certificates(self) -> list[tuple[tuple[str | int, ...], TlsCertificate]]:
        """Every certificate with its field path below ``tls``, the default first."""
        out: list[tuple[tuple[str | int, ...], TlsCertificate]] = []
        if self.cert_file is not None and self.key_file is not None:
            out.append(((), TlsCertificate(cert_file=self.cert_file, key_file=self.key_file)))
        out += [(("certificates", i), cert) for i, cert in enumerate(self.certificates)]
        return out


class ListenConfig(KairosModel):
    """The proxy port's protocol (the address is ``KAIROS_HOST`` / ``KAIROS_PORT``)."""

    #: Serve HTTPS on the proxy port.
    tls: TlsConfig | None = None
    #: A plain-HTTP listener ("host:port") answering every request with a 308 redirect
    #: to the same URL on https. Needs ``tls``.
    http_redirect: str | None = None
    #: The port named in those redirects (omitted when 443); default: the proxy port.
    https_port: Annotated[int, Field(ge=1, le=65535)] | None = None

    @field_validator("http_redirect")
    @classmethod
    def _check_redirect(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @model_validator(mode="after")
    def _redirect_needs_tls(self) -> ListenConfig:
        if self.http_redirect is not None and self.tls is None:
            raise ValueError("'http_redirect' needs 'tls': there is no https to redirect to")
        return self

    @property
    def http_redirect_address(self) -> tuple[str, int] | None:
        return None if self.http_redirect is None else parse_listen(self.http_redirect)

    @property
    def startup_fields(self) -> ListenConfig:
        """This block without the certificate files (what only a restart changes)."""
        if self.tls is None:
            return self
        tls = self.tls.model_copy(update={"cert_file": None, "key_file": None, "certificates": []})
        return self.model_copy(update={"tls": tls})
