"""https backends: certificates are verified unless the route says otherwise; a backend
may ask for the gateway's client certificate (mTLS)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from kairos_core import ConfigError, load_config
from kairos_gateway import PluginRegistry
from kairos_gateway.snapshot import check_runtime
from kairos_gateway.upstream import Endpoint
from kairos_gateway.upstream.tls import client_ssl_context
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from tests.conftest import GatewayFactory
from tests.support import eventually, raw_request


class _Hello(web.RequestHandler):
    def get(self) -> None:
        self.write("secure hello")


@pytest.fixture
async def tls_backend(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = HTTPServer(web.Application([(r"/.*", _Hello)]), ssl_options=context)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    yield port, ca_file
    server.stop()
    await server.close_all_connections()


def _config(port: int, **backend: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "routers": [
            {
                "external_path": "/secure",
                "internal_path": "/",
                "methods": ["GET"],
                "backends": [{"host": "https://127.0.0.1", "port": port, **backend}],
            }
        ],
    }


async def test_untrusted_certificate_is_refused(
    tls_backend: tuple[int, Path], gateway_factory: GatewayFactory
) -> None:
    port, _ = tls_backend
    gw = await gateway_factory(_config(port))
    resp = await raw_request(gw.port, "/secure")
    assert resp.status == 502
    text = (await raw_request(gw.port, "/metrics")).body.decode()
    assert 'kind="tls"' in text


async def test_certificate_signed_by_configured_ca_is_accepted(
    tls_backend: tuple[int, Path], gateway_factory: GatewayFactory
) -> None:
    port, ca_file = tls_backend
    gw = await gateway_factory(_config(port, tls_ca_file=str(ca_file)))
    resp = await raw_request(gw.port, "/secure")
    assert resp.status == 200
    assert resp.body == b"secure hello"


async def test_verification_can_be_switched_off(
    tls_backend: tuple[int, Path], gateway_factory: GatewayFactory
) -> None:
    port, _ = tls_backend
    gw = await gateway_factory(_config(port, tls_verify=False))
    assert (await raw_request(gw.port, "/secure")).status == 200


# -- client certificates for backends (mTLS) -----------------------------------------


class _Peer(web.RequestHandler):
    def get(self) -> None:
        cert = self.request.get_ssl_certificate(binary_form=True)
        assert isinstance(cert, bytes)
        self.write(x509.load_der_x509_certificate(cert).subject.rfc4514_string())


@dataclass
class MtlsBackend:
    port: int
    ca_file: Path
    client_ca: trustme.CA


@pytest.fixture
async def mtls_backend(tmp_path: Path) -> AsyncIterator[MtlsBackend]:
    """An https backend that requires a client certificate from its own client CA."""
    ca, client_ca = trustme.CA(), trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    client_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca_file = tmp_path / "backend-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = HTTPServer(web.Application([(r"/.*", _Peer)]), ssl_options=context)
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    yield MtlsBackend(port, ca_file, client_ca)
    server.stop()
    await server.close_all_connections()


def _client_files(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    issued = ca.issue_cert(f"{name}.gateway.internal", common_name=name)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


async def test_backend_gets_the_client_certificate(
    mtls_backend: MtlsBackend, tmp_path: Path, gateway_factory: GatewayFactory
) -> None:
    cert, key = _client_files(mtls_backend.client_ca, tmp_path, "kairos-edge")
    config = _config(
        mtls_backend.port,
        tls_ca_file=str(mtls_backend.ca_file),
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    gw = await gateway_factory(config)
    resp = await raw_request(gw.port, "/secure")
    assert resp.status == 200
    assert b"CN=kairos-edge" in resp.body


async def test_backend_requiring_a_certificate_refuses_a_gateway_without_one(
    mtls_backend: MtlsBackend, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(_config(mtls_backend.port, tls_ca_file=str(mtls_backend.ca_file)))
    assert (await raw_request(gw.port, "/secure")).status == 502


def test_client_certificate_files_are_checked(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert, _ = _client_files(ca, tmp_path, "a")
    _, other_key = _client_files(ca, tmp_path, "b")
    missing = tmp_path / "missing.pem"
    for cert_file, key_file, expected in [
        (missing, other_key, f"tls_cert_file: cannot read {missing}: No such file or directory"),
        (
            cert,
            other_key,
            f"tls_key_file: the key in {other_key} does not match the certificate in {cert}",
        ),
    ]:
        config = load_config(_config(1, tls_cert_file=str(cert_file), tls_key_file=str(key_file)))
        with pytest.raises(ConfigError) as info:
            check_runtime(config, PluginRegistry())
        assert [str(e) for e in info.value.errors] == [f"routers[0].backends[0].{expected}"]


def test_client_certificate_needs_both_files_and_https() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(1, tls_cert_file="/c.pem"))
    assert "give 'tls_cert_file' and 'tls_key_file' together" in str(info.value)
    plain = _config(1, tls_cert_file="/c.pem", tls_key_file="/k.pem")
    plain["routers"][0]["backends"][0]["host"] = "http://127.0.0.1"
    with pytest.raises(ConfigError) as info:
        load_config(plain)
    assert "routers[0].backends[0].tls_cert_file: applies only to https backends" in str(info.value)


async def test_renewed_client_certificate_is_used_for_new_connections(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="kairos.gateway")
    ca = trustme.CA()
    cert, key = _client_files(ca, tmp_path, "edge")
    endpoint = Endpoint("https", "127.0.0.1", 443, tls_cert_file=str(cert), tls_key_file=str(key))
    first = client_ssl_context(endpoint)
    assert client_ssl_context(endpoint) is first
    # A broken renewal (the key of another certificate) keeps the context in use.
    _, other_key = _client_files(ca, tmp_path, "other")
    other_key.replace(key)

    def refused() -> bool:
        return client_ssl_context(endpoint) is first and any(
            "cannot be loaded" in r.getMessage() for r in caplog.records
        )

    await eventually(refused, timeout=5)
    (tmp_path / "new").mkdir()
    renewed_cert, renewed_key = _client_files(ca, tmp_path / "new", "edge")
    renewed_key.replace(key)
    renewed_cert.replace(cert)

    def renewed() -> bool:
        return client_ssl_context(endpoint) is not first

    await eventually(renewed, timeout=5)
