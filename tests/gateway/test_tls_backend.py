"""https backends: certificates are verified unless the route says otherwise."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from tests.conftest import GatewayFactory
from tests.support import raw_request


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
