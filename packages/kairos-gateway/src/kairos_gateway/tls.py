"""TLS termination on the proxy port: server contexts, SNI, certificate reload.

`ServerTls` owns the listener's TLS. The listener wraps every connection with one
*front* context, fixed at start-up: minimum version, ALPN ``http/1.1``, client
certificate verification. Its SNI callback hands the handshake to the context of the
certificate for the name the client asked for (`CertificateSet.pick`), so the
certificates can change while serving: `refresh` loads the files into a new
`CertificateSet` and swaps one reference. Handshakes after the swap get the new
certificate; open connections keep theirs (they are never touched).

Certificates are reloaded when their files change (`watch` polls modification time,
size and inode every second), on SIGHUP and on every configuration reload (the gateway
calls `refresh`). A reload that fails keeps the certificates in use and logs the error,
naming the file. `/metrics` shows each certificate's expiry and whether the last reload
failed (`collect`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field

from kairos_core import ConfigError, FieldError, GatewayConfig, TlsCertificate, TlsConfig
from prometheus_client.core import GaugeMetricFamily, Metric

from .pem import PemError, fingerprint, load_ca_file, load_chain

__all__ = ["CertificateSet", "ServerTls", "check_listen", "load_certificates"]

log = logging.getLogger("kairos.gateway")

#: How often the certificate files are checked for changes.
POLL_INTERVAL_S = 1.0

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_WHERE: tuple[str | int, ...] = ("listen", "tls")


def base_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context with ``tls``'s protocol settings and no certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    ctx.set_alpn_protocols(["http/1.1"])
    mode = tls.client_verification
    if mode != "off" and tls.client_ca_file is not None:
        try:
            load_ca_file(ctx, tls.client_ca_file, field="client_ca_file")
        except PemError as exc:
            raise ConfigError([FieldError((*_WHERE, exc.field), exc.message)]) from None
        ctx.verify_mode = _VERIFY[mode]
    return ctx


@dataclass(frozen=True, slots=True)
class CertificateSet:
    """The certificates in use: one context per certificate, found by SNI name."""

    default: ssl.SSLContext
    exact: dict[str, ssl.SSLContext] = field(default_factory=dict)
    #: ``*.example.com`` is kept under ``example.com``.
    wildcard: dict[str, ssl.SSLContext] = field(default_factory=dict)
    #: Digest of every file's content: a reload with the same files is a no-op.
    digest: bytes = b""
    #: Per certificate (its field path, ``listen.tls.certificates[0]``): the names it
    #: serves, and when it expires (Unix time).
    names: tuple[tuple[str, tuple[str, ...]], ...] = ()
    expiry: tuple[tuple[str, float], ...] = ()

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        if server_name is None:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        if dot:
            found = self.wildcard.get(parent)
            if found is not None:
                return found
        return self.default


def _path(loc: tuple[str | int, ...]) -> str:
    return FieldError(loc, "").path


def load_certificates(
    tls: TlsConfig, *, base: TlsConfig | None = None
) -> tuple[CertificateSet, list[str]]:
    """Load every certificate of ``tls``; returns the set and warnings (an expired
    certificate). Raises `ConfigError` with one error per unusable file, each naming
    its field (``listen.tls.certificates[1].key_file``) and the file.

    ``base`` supplies the protocol settings (min version, client CA) when they differ
    from ``tls``'s: a reload takes new certificate files, the rest only at start-up.
    """
    settings = base or tls
    errors: list[FieldError] = []
    warnings: list[str] = []
    contexts: list[tuple[tuple[str | int, ...], TlsCertificate, ssl.SSLContext]] = []
    digest = hashlib.sha256()
    names: list[tuple[str, tuple[str, ...]]] = []
    expiry: list[tuple[str, float]] = []
    for loc, cert in tls.all_certificates():
        where = (*_WHERE, *loc)
        ctx = base_context(settings)
        try:
            chain = load_chain(ctx, cert.cert_file, cert.key_file)
        except PemError as exc:
            errors.append(FieldError((*where, exc.field), exc.message))
            continue
        digest.update(chain.content)
        problem = chain.validity_problem()
        if problem is not None:
            warnings.append(
                f"{_path((*where, 'cert_file'))}: the certificate in {cert.cert_file} {problem}"
            )
        served = tuple(cert.server_names) if cert.server_names is not None else chain.dns_names
        if not served and contexts:
            errors.append(
                FieldError(
                    (*where, "server_names"),
                    f"the certificate in {cert.cert_file} names no DNS host "
                    "(subjectAltName); list the names it serves",
                )
            )
            continue
        names.append((_path(where), served))
        expiry.append((_path(where), chain.not_after.timestamp()))
        contexts.append((where, cert, ctx))
    if errors:
        raise ConfigError(errors)
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for (_, _, ctx), (_, served) in zip(contexts, names, strict=True):
        for name in served:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], ctx)
            else:
                exact.setdefault(name, ctx)
    return (
        CertificateSet(
            contexts[0][2], exact, wildcard, digest.digest(), tuple(names), tuple(expiry)
        ),
        warnings,
    )


def check_listen(config: GatewayConfig) -> list[str]:
    """Load ``listen.tls``'s files as the gateway would at start-up: raises
    `ConfigError` naming each unusable file; returns warnings (expired certificates)."""
    tls = config.listen.tls
    if tls is None:
        return []
    base_context(tls)
    return load_certificates(tls)[1]


def _files(tls: TlsConfig) -> tuple[str, ...]:
    return tuple(f for _, c in tls.all_certificates() for f in (c.cert_file, c.key_file))


class ServerTls:
    """The listener's TLS: the front `context` for the HTTP server, the certificates
    behind it, and their reload. Raises `ConfigError` when the files cannot be used."""

    def __init__(self, tls: TlsConfig) -> None:
        #: The start-up settings: protocol and client verification never change.
        self.settings = tls
        self._config = tls
        self.certificates, warnings = load_certificates(tls)
        for warning in warnings:
            log.warning(warning)
        self._stamp = fingerprint(_files(tls))
        self.reloads = 0
        #: The last reload failed: the files on disk are not what is being served.
        self.reload_failed = False
        self.context = base_context(tls)
        self.context.sni_callback = self._pick

    def _pick(self, sock: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        sock.context = self.certificates.pick(server_name)

    def refresh(self, tls: TlsConfig | None = None) -> bool:
        """Load the certificate files again (those of ``tls`` when given: a reloaded
        configuration may name other files); swap them in when their content changed.
        Returns whether new certificates are in use. Never raises: a failure is
        logged and the certificates in use stay."""
        config = self._config if tls is None else tls
        stamp = fingerprint(_files(config))
        try:
            loaded, warnings = load_certificates(config, base=self.settings)
        except ConfigError as exc:
            # The files stay the ones to watch (a reload naming new files keeps naming
            # them): tried again when they change, logged once per change.
            self._config, self._stamp = config, stamp
            self.reload_failed = True
            log.error(
                "TLS certificates not reloaded; still serving the previous ones",
                extra={"fields": {"errors": [str(e) for e in exc.errors]}},
            )
            return False
        self._config, self._stamp = config, stamp
        self.reload_failed = False
        if loaded.digest == self.certificates.digest:
            return False
        for warning in warnings:
            log.warning(warning)
        self.certificates = loaded
        self.reloads += 1
        log.info(
            "TLS certificates reloaded",
            extra={"fields": {"certificates": [path for path, _ in loaded.names]}},
        )
        return True

    def changed_on_disk(self) -> bool:
        return fingerprint(_files(self._config)) != self._stamp

    def collect(self) -> Iterator[Metric]:
        """Prometheus families (a `Collector` for the gateway's metrics registry)."""
        expiry = GaugeMetricFamily(
            "kairos_tls_certificate_expiry_timestamp_seconds",
            "When each certificate served on the TLS listener expires (Unix time)",
            labels=["certificate"],
        )
        for path, not_after in self.certificates.expiry:
            expiry.add_metric([path], not_after)
        yield expiry
        yield GaugeMetricFamily(
            "kairos_tls_certificate_reload_failed",
            "1 when the certificate files changed but could not be loaded (the previous "
            "certificates are still served)",
            value=1 if self.reload_failed else 0,
        )

    async def watch(self, interval_s: float = POLL_INTERVAL_S) -> None:
        """Reload the certificates whenever their files change (until cancelled)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.changed_on_disk():
                self.refresh()
