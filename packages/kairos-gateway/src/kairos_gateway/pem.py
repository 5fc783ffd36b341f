"""Loading PEM certificate chains and keys into an `ssl.SSLContext`, with errors that
name the file and the problem.

OpenSSL's own messages ("[SSL] PEM lib (_ssl.c:3900)") say neither which file nor
what is wrong with it, so the files are read and parsed here first (with
`cryptography`, loaded only when TLS files are configured) and then handed to
`SSLContext.load_cert_chain`, whose remaining failure is a key that does not fit.
Encrypted keys are refused rather than prompting for a password on the terminal.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

__all__ = ["Chain", "PemError", "fingerprint", "load_ca_file", "load_chain"]


class PemError(Exception):
    """A certificate, key or CA file that cannot be used; ``field`` says which setting
    named it (e.g. ``"key_file"``), the message names the file."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Chain:
    """What was loaded: the leaf certificate's DNS names and validity, and the bytes
    of both files (to tell a real change from a touched file)."""

    dns_names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    content: bytes

    def validity_problem(self, now: datetime.datetime | None = None) -> str | None:
        """ "expired on ..." / "not valid before ...", or None while valid."""
        now = now or datetime.datetime.now(datetime.UTC)
        if now > self.not_after:
            return f"expired on {self.not_after:%Y-%m-%d %H:%M} UTC"
        if now < self.not_before:
            return f"is not valid before {self.not_before:%Y-%m-%d %H:%M} UTC"
        return None


class _Encrypted(Exception):
    pass


def _no_password() -> str:
    raise _Encrypted


def _read(path: str, field: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(1024 * 1024)
    except OSError as exc:
        raise PemError(field, f"cannot read {path}: {exc.strerror or exc}") from None


def _certificates(data: bytes, path: str, field: str) -> list[Certificate]:
    from cryptography import x509

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise PemError(field, f"{path} holds no PEM certificate")
    return certs


def load_chain(
    context: ssl.SSLContext,
    cert_file: str,
    key_file: str,
    *,
    cert_field: str = "cert_file",
    key_field: str = "key_file",
) -> Chain:
    """Load a certificate chain (leaf first) and its private key into ``context``;
    raises `PemError` naming the file and the setting (``cert_field``/``key_field``)."""
    from cryptography import x509

    cert_pem = _read(cert_file, cert_field)
    key_pem = _read(key_file, key_field)
    leaf = _certificates(cert_pem, cert_file, cert_field)[0]
    if b"PRIVATE KEY-----" not in key_pem:
        raise PemError(key_field, f"{key_file} holds no PEM private key")
    if b"ENCRYPTED" in key_pem:
        raise PemError(key_field, f"{key_file}: encrypted private keys are not supported")
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except _Encrypted:
        raise PemError(key_field, f"{key_file}: encrypted private keys are not supported") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise PemError(
                key_field, f"the key in {key_file} does not match the certificate in {cert_file}"
            ) from None
        raise PemError(
            key_field, f"cannot load {cert_file} with {key_file}: {exc.reason or exc}"
        ) from None
    except OSError as exc:  # the file vanished between the two reads
        raise PemError(cert_field, f"cannot read {cert_file}: {exc.strerror or exc}") from None
    try:
        names = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return Chain(
        dns_names=tuple(name.lower() for name in names),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        content=cert_pem + b"\0" + key_pem,
    )


def load_ca_file(context: ssl.SSLContext, ca_file: str, *, field: str) -> bytes:
    """Trust the CA certificates in ``ca_file``; returns its bytes."""
    data = _read(ca_file, field)
    _certificates(data, ca_file, field)
    try:
        context.load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise PemError(field, f"{ca_file} cannot be read as a PEM CA bundle: {exc}") from None
    return data


def fingerprint(paths: tuple[str, ...]) -> tuple[tuple[int, int, int] | None, ...]:
    """Modification time, size and inode of each file (None when missing): a cheap
    test for "changed since", replaced-by-rename included."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)
