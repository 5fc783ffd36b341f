"""The identity of one backend, used as the connection-pool key."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Endpoint"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream server. Hashable; equal endpoints share pooled connections.

    ``host`` is a hostname or an IP address (IPv6 without brackets). ``tls_verify``,
    ``tls_ca_file`` and the client certificate only matter for ``https``. ``host_header``
    is the value for a ``Host`` header (default port omitted, IPv6 bracketed) and
    ``label`` is ``scheme://host:port`` for logs and metrics; both are derived, and not
    part of equality.
    """

    scheme: str
    host: str
    port: int
    tls_verify: bool = True
    tls_ca_file: str | None = None
    #: Client certificate chain and key for mTLS (both or neither).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    host_header: str = field(init=False, repr=False, compare=False)
    label: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        default_port = _DEFAULT_PORTS.get(self.scheme)
        if default_port is None:
            raise ValueError(f"unsupported scheme {self.scheme!r} (expected http or https)")
        if not self.host or any(c in self.host for c in "/[]@ \t\r\n\0"):
            raise ValueError(f"invalid upstream host {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid upstream port {self.port!r}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if self.port == default_port else f"{host}:{self.port}"
        # frozen dataclass: derived fields are set once, here.
        object.__setattr__(self, "host_header", host_header)
        object.__setattr__(self, "label", f"{self.scheme}://{host}:{self.port}")
