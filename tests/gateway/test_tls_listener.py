"""TLS termination on the proxy port (``listen.tls``): real handshakes, real clients.

Certificates come from a trustme CA; clients are aiohttp, Python's `ssl` over asyncio
streams (to see which certificate a handshake got) and ``openssl s_client`` where it
is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from cryptography import x509
from kairos_core import ConfigError, load_config
from kairos_gateway.tls import check_listen
from prometheus_client.utils import floatToGoString

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import (
    LOOPBACK,
    EchoBackend,
    RawResponse,
    clean_env,
    eventually,
    gateway_process,
    raw_request,
    read_response,
    route,
    unused_port,
)

OPENSSL = shutil.which("openssl")


@dataclass
class CertFiles:
    cert: Path
    key: Path

    def block(self, **extra: Any) -> dict[str, Any]:
        return {"cert_file": str(self.cert), "key_file": str(self.key), **extra}


def write_cert(ca: trustme.CA, directory: Path, name: str, *hosts: str, **issue: Any) -> CertFiles:
    """A certificate for ``hosts`` signed by ``ca``, written as name.pem / name.key."""
    cert = ca.issue_cert(*hosts, **issue)
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key")
    cert.private_key_pem.write_to_path(str(files.key))
    # The chain: leaf first, then intermediates (none here).
    files.cert.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return files


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_cert(ca: trustme.CA, tmp_path: Path) -> CertFiles:
    return write_cert(ca, tmp_path, "server", "127.0.0.1", "localhost")


def client_context(ca: trustme.CA, **options: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for name, value in options.items():
        setattr(ctx, name, value)
    return ctx


def tls_config(backend: EchoBackend, tls: dict[str, Any], **listen: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "listen": {"tls": tls, **listen},
        "routers": [route("/svc/{*rest}", "/{*rest}", [backend])],
    }


async def tls_request(
    port: int,
    target: str,
    ctx: ssl.SSLContext,
    *,
    server_name: str = LOOPBACK,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
) -> RawResponse:
    """One request on a fresh TLS connection (``Connection: close``)."""
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname=server_name
        )
        try:
            lines = [f"{method} {target} HTTP/1.1", f"Host: {server_name}:{port}"]
            lines += [f"{k}: {v}" for k, v in headers or []]
            lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            return await read_response(reader, head=method == "HEAD")
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()


async def served_certificate(
    port: int, ctx: ssl.SSLContext, server_name: str | None
) -> x509.Certificate:
    """The certificate the gateway presents to a handshake with SNI ``server_name``."""
    async with asyncio.timeout(10):
        _, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname=server_name
        )
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


def dns_names(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def header(request: Any, name: str) -> list[str]:
    return request.headers.get_list(name)


# -- serving HTTPS ------------------------------------------------------------------


async def test_https_request_is_proxied_and_knows_its_scheme(
    ca: trustme.CA,
    server_cert: CertFiles,
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(tls_config(backend, server_cert.block()))
    connector = aiohttp.TCPConnector(ssl=client_context(ca))
    url = f"https://127.0.0.1:{gw.port}/svc/users/7?x=1"
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        assert resp.status == 200
        body = await resp.json()
        hsts = resp.headers.get("Strict-Transport-Security")
    assert body["uri"] == "/users/7?x=1"
    seen = backend.requests[-1]
    assert header(seen, "X-Forwarded-Proto") == ["https"]
    assert hsts == "max-age=31536000; includeSubDomains"
    line = json.loads(gw.access_lines()[-1])
    assert line["scheme"] == "https"
    assert line["path"] == "/svc/users/7"


async def test_plain_http_on_the_tls_port_gets_no_answer(
    server_cert: CertFiles, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(tls_config(backend, server_cert.block()))
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await raw_request(gw.port, "/svc/users/1")
    assert backend.requests == []


async def test_alpn_is_http11_and_tls13_is_spoken(
    ca: trustme.CA,
    server_cert: CertFiles,
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(tls_config(backend, server_cert.block()))
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection(LOOPBACK, gw.port, ssl=ctx)
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.selected_alpn_protocol() == "http/1.1"
    assert sslobj.version() == "TLSv1.3"
    writer.close()


# -- SNI ----------------------------------------------------------------------------


async def test_sni_chooses_the_certificate(
    ca: trustme.CA, tmp_path: Path, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    default = write_cert(ca, tmp_path, "default", "127.0.0.1")
    api = write_cert(ca, tmp_path, "api", "api.example.com")
    wild = write_cert(ca, tmp_path, "wild", "*.apps.example.com")
    named = write_cert(ca, tmp_path, "named", "other.example.org")
    tls = default.block(
        certificates=[
            api.block(),  # names from the certificate's subjectAltName
            wild.block(),
            {**named.block(), "server_names": ["legacy.example.net"]},
        ]
    )
    gw = await gateway_factory(tls_config(backend, tls))
    ctx = client_context(ca)
    assert dns_names(await served_certificate(gw.port, ctx, "api.example.com")) == [
        "api.example.com"
    ]
    assert dns_names(await served_certificate(gw.port, ctx, "Shop.Apps.Example.com")) == [
        "*.apps.example.com"
    ]
    unchecked = client_context(ca, check_hostname=False)
    # The wildcard covers one label only; unknown and absent SNI get the default.
    for name in ("a.b.apps.example.com", "unknown.example.com", None):
        cert = await served_certificate(gw.port, unchecked, name)
        assert cert.subject == x509.load_pem_x509_certificate(default.cert.read_bytes()).subject
    legacy = await served_certificate(gw.port, unchecked, "legacy.example.net")
    assert dns_names(legacy) == ["other.example.org"]
    # The request itself is served whichever certificate the handshake got.
    resp = await tls_request(gw.port, "/svc/x", ctx, server_name="api.example.com")
    assert resp.status == 200


# -- protocol versions --------------------------------------------------------------


async def test_tls12_is_the_default_minimum(
    ca: trustme.CA,
    server_cert: CertFiles,
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(tls_config(backend, server_cert.block()))
    tls12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert (await tls_request(gw.port, "/svc/x", tls12)).status == 200
    # An old client: TLS 1.0-1.1 only (Python deprecates asking for them).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls11 = client_context(
            ca,
            minimum_version=ssl.TLSVersion.TLSv1,
            maximum_version=ssl.TLSVersion.TLSv1_1,
        )
    tls11.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        await tls_request(gw.port, "/svc/x", tls11)


async def test_min_version_13_refuses_tls12(
    ca: trustme.CA,
    server_cert: CertFiles,
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory(tls_config(backend, server_cert.block(min_version="1.3")))
    tls12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        await tls_request(gw.port, "/svc/x", tls12)
    assert (await tls_request(gw.port, "/svc/x", client_context(ca))).status == 200


# -- certificate reload -------------------------------------------------------------


async def test_changed_files_are_served_to_new_handshakes_and_open_connections_stay(
    ca: trustme.CA, tmp_path: Path, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    files = write_cert(ca, tmp_path, "server", "127.0.0.1")
    gw = await gateway_factory(tls_config(backend, files.block()))
    ctx = client_context(ca)
    first = (await served_certificate(gw.port, ctx, None)).serial_number
    reader, writer = await asyncio.open_connection(LOOPBACK, gw.port, ssl=ctx)
    request = f"GET /svc/keep HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n".encode()
    writer.write(request)
    assert (await read_response(reader)).status == 200

    # Replace both files (a new key too), as a certificate renewal does.
    (tmp_path / "renewed").mkdir()
    renewed = write_cert(ca, tmp_path / "renewed", "server", "127.0.0.1")
    os.replace(renewed.key, files.key)
    os.replace(renewed.cert, files.cert)

    async def new_certificate() -> bool:
        return (await served_certificate(gw.port, ctx, None)).serial_number != first

    await eventually(new_certificate, timeout=10, interval=0.2)
    assert gw.gateway.tls is not None
    assert gw.gateway.tls.reloads == 1
    # The connection opened before the reload still serves requests.
    writer.write(request)
    assert (await read_response(reader)).status == 200
    assert len(backend.requests) == 2
    writer.close()


async def test_a_broken_renewal_keeps_the_old_certificate(
    ca: trustme.CA,
    tmp_path: Path,
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kairos.gateway")
    files = write_cert(ca, tmp_path, "server", "127.0.0.1")
    gw = await gateway_factory(tls_config(backend, files.block()))
    ctx = client_context(ca)
    first = (await served_certificate(gw.port, ctx, None)).serial_number
    other = write_cert(ca, tmp_path, "other", "127.0.0.1")
    original_key = tmp_path / "original.key"
    shutil.copy(files.key, original_key)
    metrics = (await tls_request(gw.port, "/metrics", ctx)).body.decode()
    expires = x509.load_pem_x509_certificate(files.cert.read_bytes()).not_valid_after_utc
    gauge = 'kairos_tls_certificate_expiry_timestamp_seconds{certificate="listen.tls"}'
    assert f"{gauge} {floatToGoString(expires.timestamp())}" in metrics
    assert "kairos_tls_certificate_reload_failed 0.0" in metrics
    os.replace(other.key, files.key)  # a key that does not fit the certificate

    def logged() -> bool:
        return any("not reloaded" in r.getMessage() for r in caplog.records)

    await eventually(logged, timeout=10)
    record = next(r for r in caplog.records if "not reloaded" in r.getMessage())
    errors = record.__dict__["fields"]["errors"]
    assert errors == [
        f"listen.tls.key_file: the key in {files.key} does not match the certificate in "
        f"{files.cert}"
    ]
    assert (await served_certificate(gw.port, ctx, None)).serial_number == first
    assert (await tls_request(gw.port, "/svc/x", ctx)).status == 200
    metrics = (await tls_request(gw.port, "/metrics", ctx)).body.decode()
    assert "kairos_tls_certificate_reload_failed 1.0" in metrics
    # The key is put back: the reload succeeds (the same certificate) and the gauge clears.
    os.replace(original_key, files.key)
    await eventually(lambda: gw.gateway.tls is not None and not gw.gateway.tls.reload_failed)


async def test_config_reload_and_sighup_read_the_certificates_at_once(
    ca: trustme.CA,
    tmp_path: Path,
    backend: EchoBackend,
    file_gateway_factory: GatewayFactory,
) -> None:
    files = write_cert(ca, tmp_path, "server", "127.0.0.1")
    gw = await file_gateway_factory(tls_config(backend, files.block()))
    ctx = client_context(ca)
    first = (await served_certificate(gw.port, ctx, None)).serial_number
    (tmp_path / "new").mkdir()
    renewed = write_cert(ca, tmp_path / "new", "server", "127.0.0.1")
    os.replace(renewed.key, files.key)
    os.replace(renewed.cert, files.cert)
    # POST /api/config/reload (over TLS: the management API is on the proxy port).
    resp = await tls_request(gw.port, "/api/config/reload", ctx, method="POST")
    assert resp.status == 200, resp.body
    second = (await served_certificate(gw.port, ctx, None)).serial_number
    assert second != first
    # What SIGHUP calls: nothing changed, nothing reloaded.
    assert gw.gateway.reload_certificates() is False
    (tmp_path / "third").mkdir()
    third = write_cert(ca, tmp_path / "third", "server", "127.0.0.1")
    os.replace(third.key, files.key)
    os.replace(third.cert, files.cert)
    assert gw.gateway.reload_certificates() is True
    assert (await served_certificate(gw.port, ctx, None)).serial_number not in (first, second)


async def test_a_reload_naming_new_files_switches_to_them(
    ca: trustme.CA,
    tmp_path: Path,
    backend: EchoBackend,
    file_gateway_factory: GatewayFactory,
) -> None:
    old = write_cert(ca, tmp_path, "old", "127.0.0.1")
    gw = await file_gateway_factory(tls_config(backend, old.block()))
    new = write_cert(ca, tmp_path, "new", "127.0.0.1", "new.example.com")
    config = tls_config(backend, new.block())
    (tmp_path / "config.json").write_text(json.dumps(config))
    ctx = client_context(ca)
    resp = await tls_request(gw.port, "/api/config/reload", ctx, method="POST")
    assert resp.status == 200, resp.body
    cert = await served_certificate(gw.port, ctx, "new.example.com")
    assert "new.example.com" in dns_names(cert)


# -- client certificates ------------------------------------------------------------


@pytest.fixture
def client_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    client_ca = trustme.CA()
    path = tmp_path / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(path))
    return client_ca, path


def with_client_cert(ctx: ssl.SSLContext, ca: trustme.CA, identity: str) -> x509.Certificate:
    issued = ca.issue_cert(identity, common_name=identity)
    issued.configure_cert(ctx)
    return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())


async def test_required_client_certificate(
    ca: trustme.CA,
    server_cert: CertFiles,
    client_ca: tuple[trustme.CA, Path],
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    issuer, ca_file = client_ca
    tls = server_cert.block(client_ca_file=str(ca_file))  # required by default
    gw = await gateway_factory(tls_config(backend, tls))
    ctx = client_context(ca)
    # TLS 1.3: the refusal arrives after the client's handshake completed.
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await tls_request(gw.port, "/svc/x", ctx)
    # A certificate from another CA is refused too.
    stranger = client_context(ca)
    with_client_cert(stranger, trustme.CA(), "mallory@example.com")
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await tls_request(gw.port, "/svc/x", stranger)
    assert backend.requests == []

    alice = client_context(ca)
    cert = with_client_cert(alice, issuer, "alice@example.com")
    spoof = [("X-Client-Cert-Subject", "CN=admin")]
    resp = await tls_request(gw.port, "/svc/x", alice, headers=spoof)
    assert resp.status == 200
    subject = header(backend.requests[-1], "X-Client-Cert-Subject")
    assert subject == [cert.subject.rfc4514_string()]
    assert "CN=alice@example.com" in subject[0]


async def test_optional_client_certificate_and_a_custom_header(
    ca: trustme.CA,
    server_cert: CertFiles,
    client_ca: tuple[trustme.CA, Path],
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    issuer, ca_file = client_ca
    tls = server_cert.block(
        client_ca_file=str(ca_file), client_cert="optional", client_subject_header="X-Peer"
    )
    gw = await gateway_factory(tls_config(backend, tls))
    anonymous = client_context(ca)
    resp = await tls_request(gw.port, "/svc/x", anonymous, headers=[("X-Peer", "CN=admin")])
    assert resp.status == 200
    assert header(backend.requests[-1], "X-Peer") == []

    bob = client_context(ca)
    cert = with_client_cert(bob, issuer, "bob@example.com")
    assert (await tls_request(gw.port, "/svc/x", bob)).status == 200
    assert header(backend.requests[-1], "X-Peer") == [cert.subject.rfc4514_string()]


async def test_subject_header_is_stripped_without_tls(
    backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/svc/{*rest}", "/{*rest}", [backend])]}
    )
    spoof = [("X-Client-Cert-Subject", "CN=admin"), ("x-client-cert-subject", "CN=root")]
    assert (await raw_request(gw.port, "/svc/x", headers=spoof)).status == 200
    assert header(backend.requests[-1], "X-Client-Cert-Subject") == []


# -- the HTTP redirect listener -----------------------------------------------------


async def test_http_redirect_listener_answers_308(
    server_cert: CertFiles, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    redirect_port = unused_port()
    gw = await gateway_factory(
        tls_config(backend, server_cert.block(), http_redirect=f"127.0.0.1:{redirect_port}")
    )
    assert gw.gateway.redirect_addresses == [(LOOPBACK, redirect_port)]
    resp = await raw_request(redirect_port, "/svc/users?id=1", host="shop.example.com")
    assert resp.status == 308
    assert resp.header("Location") == f"https://shop.example.com:{gw.port}/svc/users?id=1"
    post = await raw_request(
        redirect_port, "/svc/x", method="POST", body=b"{}", host="Shop.Example.com:80"
    )
    assert post.status == 308
    assert post.header("Location") == f"https://shop.example.com:{gw.port}/svc/x"
    bad = await raw_request(redirect_port, "/x", host="evil.example.com/@other")
    assert bad.status == 400
    assert backend.requests == []


async def test_redirect_names_the_public_https_port(
    server_cert: CertFiles, backend: EchoBackend, gateway_factory: GatewayFactory
) -> None:
    redirect_port = unused_port()
    config = tls_config(
        backend,
        server_cert.block(),
        http_redirect=f"127.0.0.1:{redirect_port}",
        https_port=443,
    )
    await gateway_factory(config)
    resp = await raw_request(redirect_port, "/", host="example.com")
    assert resp.header("Location") == "https://example.com/"


# -- errors name the field and the file ----------------------------------------------


def _listen_errors(tls: dict[str, Any]) -> list[str]:
    config = load_config({"version": 1, "listen": {"tls": tls}, "routers": []})
    with pytest.raises(ConfigError) as info:
        check_listen(config)
    return [str(error) for error in info.value.errors]


def test_unreadable_and_mismatched_files_are_named(
    ca: trustme.CA, tmp_path: Path, server_cert: CertFiles
) -> None:
    missing = tmp_path / "missing.pem"
    assert _listen_errors({"cert_file": str(missing), "key_file": str(server_cert.key)}) == [
        f"listen.tls.cert_file: cannot read {missing}: No such file or directory"
    ]
    other = write_cert(ca, tmp_path, "other", "example.com")
    assert _listen_errors({"cert_file": str(server_cert.cert), "key_file": str(other.key)}) == [
        f"listen.tls.key_file: the key in {other.key} does not match the certificate in "
        f"{server_cert.cert}"
    ]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    errors = _listen_errors(
        {
            "cert_file": str(server_cert.cert),
            "key_file": str(server_cert.key),
            "certificates": [{"cert_file": str(garbage), "key_file": str(server_cert.key)}],
            "client_ca_file": str(tmp_path / "nope.pem"),
        }
    )
    assert errors == [
        f"listen.tls.client_ca_file: cannot read {tmp_path / 'nope.pem'}: No such file or directory"
    ]
    errors = _listen_errors(
        {
            "cert_file": str(server_cert.cert),
            "key_file": str(server_cert.key),
            "certificates": [{"cert_file": str(garbage), "key_file": str(server_cert.key)}],
        }
    )
    assert errors == [f"listen.tls.certificates[0].cert_file: {garbage} holds no PEM certificate"]


def test_expired_certificate_is_a_warning(ca: trustme.CA, tmp_path: Path) -> None:
    expired = write_cert(
        ca,
        tmp_path,
        "expired",
        "example.com",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    config = load_config({"version": 1, "listen": {"tls": expired.block()}, "routers": []})
    assert check_listen(config) == [
        f"listen.tls.cert_file: the certificate in {expired.cert} expired on 2021-01-01 00:00 UTC"
    ]


async def _check(config: dict[str, Any], tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_gateway",
        "--check",
        "--config",
        str(path),
        cwd=tmp_path,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_check_names_the_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    config = {
        "version": 1,
        "listen": {"tls": {"cert_file": str(missing), "key_file": str(missing)}},
        "routers": [],
    }
    code, err = await _check(config, tmp_path)
    assert code == 1
    assert f"listen.tls.cert_file: cannot read {missing}: No such file or directory" in err


# -- openssl s_client ---------------------------------------------------------------


async def _s_client(port: int, *args: str) -> tuple[int, str]:
    assert OPENSSL is not None
    proc = await asyncio.create_subprocess_exec(
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
def openssl() -> str:
    if OPENSSL is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is not installed (.ci/run installs it)")
        pytest.skip("openssl is not installed")
    return OPENSSL


async def test_openssl_s_client_sees_sni_alpn_and_versions(
    openssl: str,
    ca: trustme.CA,
    tmp_path: Path,
    backend: EchoBackend,
    gateway_factory: GatewayFactory,
) -> None:
    default = write_cert(ca, tmp_path, "default", "127.0.0.1")
    api = write_cert(ca, tmp_path, "api", "api.example.com")
    gw: RunningGateway = await gateway_factory(
        tls_config(backend, default.block(certificates=[api.block()]))
    )
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    code, out = await _s_client(
        gw.port,
        "-servername",
        "api.example.com",
        "-alpn",
        "http/1.1",
        "-tls1_2",
        "-CAfile",
        str(ca_file),
        "-verify_hostname",
        "api.example.com",
        "-verify_return_error",
    )
    assert code == 0, out
    assert "ALPN protocol: http/1.1" in out
    assert "TLSv1.2" in out
    assert "Verify return code: 0 (ok)" in out
    code, out = await _s_client(gw.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert code != 0, out


# -- the gateway process --------------------------------------------------------------


async def test_gateway_process_serves_https_and_reloads_on_sighup(
    ca: trustme.CA, tmp_path: Path, backend: EchoBackend
) -> None:
    files = write_cert(ca, tmp_path, "server", "127.0.0.1")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tls_config(backend, files.block())))
    ctx = client_context(ca)
    async with gateway_process("--config", str(config), cwd=tmp_path) as (proc, port, records):
        assert records[-1]["message"] == f"listening on https://127.0.0.1:{port}"
        first = (await served_certificate(port, ctx, None)).serial_number
        assert (await tls_request(port, "/svc/x", ctx)).status == 200
        (tmp_path / "new").mkdir()
        renewed = write_cert(ca, tmp_path / "new", "server", "127.0.0.1")
        os.replace(renewed.key, files.key)
        os.replace(renewed.cert, files.cert)
        proc.send_signal(signal.SIGHUP)

        async def renewed_served() -> bool:
            return (await served_certificate(port, ctx, None)).serial_number != first

        await eventually(renewed_served, timeout=10, interval=0.1)
        assert any(r["message"] == "TLS certificates reloaded" for r in records)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_two_workers_both_serve_https(
    ca: trustme.CA, tmp_path: Path, backend: EchoBackend
) -> None:
    files = write_cert(ca, tmp_path, "server", "127.0.0.1")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tls_config(backend, files.block())))
    ctx = client_context(ca)
    args = ("--config", str(config), "--workers", "2")
    async with gateway_process(*args, cwd=tmp_path) as (proc, port, _):
        pids: set[int] = set()

        async def both_workers() -> bool:
            # Fresh connections: the kernel spreads them over the two workers.
            pids.add((await tls_request(port, "/health", ctx)).json()["pid"])
            return len(pids) == 2

        await eventually(both_workers, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_a_reload_changing_start_up_settings_warns_and_keeps_them(
    ca: trustme.CA,
    server_cert: CertFiles,
    backend: EchoBackend,
    file_gateway_factory: GatewayFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kairos.gateway")
    gw = await file_gateway_factory(tls_config(backend, server_cert.block()))
    stricter = tls_config(backend, server_cert.block(min_version="1.3"))
    (tmp_path / "config.json").write_text(json.dumps(stricter))
    ctx = client_context(ca)
    resp = await tls_request(gw.port, "/api/config/reload", ctx, method="POST")
    assert resp.status == 200, resp.body
    assert any(r.getMessage().startswith("listen changed") for r in caplog.records)
    # min_version is read at start-up: a TLS 1.2 client is still served.
    tls12 = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert (await tls_request(gw.port, "/svc/x", tls12)).status == 200


async def test_a_reload_naming_missing_files_keeps_serving_and_waits_for_them(
    ca: trustme.CA,
    tmp_path: Path,
    backend: EchoBackend,
    file_gateway_factory: GatewayFactory,
) -> None:
    old = write_cert(ca, tmp_path, "old", "127.0.0.1")
    gw = await file_gateway_factory(tls_config(backend, old.block()))
    tls = gw.gateway.tls
    assert tls is not None
    later = CertFiles(tmp_path / "later.pem", tmp_path / "later.key")
    (tmp_path / "config.json").write_text(json.dumps(tls_config(backend, later.block())))
    ctx = client_context(ca)
    resp = await tls_request(gw.port, "/api/config/reload", ctx, method="POST")
    assert resp.status == 200, resp.body
    assert tls.reload_failed
    first = (await served_certificate(gw.port, ctx, None)).serial_number
    # The files appear: the watcher loads them.
    (tmp_path / "staged").mkdir()
    staged = write_cert(ca, tmp_path / "staged", "later", "127.0.0.1")
    os.replace(staged.key, later.key)
    os.replace(staged.cert, later.cert)

    async def loaded() -> bool:
        return (await served_certificate(gw.port, ctx, None)).serial_number != first

    await eventually(loaded, timeout=10, interval=0.2)
    assert not tls.reload_failed
