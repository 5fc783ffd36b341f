"""Header rewriting, pure: no sockets."""

from __future__ import annotations

import pytest
from kairos_gateway.headers import (
    client_response_headers,
    forwarded_element,
    forwarded_node,
    upstream_request_headers,
)
from tornado.httputil import HTTPHeaders

UPSTREAM = [
    ("Content-Type", "text/plain"),
    ("set-cookie", "a=1"),
    ("Set-Cookie", "b=2"),
    ("Connection", "keep-alive, X-Hop"),
    ("X-Hop", "secret"),
    ("Transfer-Encoding", "chunked"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Vary", "Accept"),
]


def test_fast_fill_matches_tornados_add() -> None:
    out = client_response_headers(
        UPSTREAM,
        request_id="r1",
        close=True,
        extra=[("Vary", "Origin"), ("RateLimit", '"x";r=1;t=2')],
        defaults=[("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff")],
    )
    expected = HTTPHeaders()
    for name, value in [
        ("Content-Type", "text/plain"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Frame-Options", "SAMEORIGIN"),  # the backend's own wins over the default
        ("Vary", "Accept"),
        ("Vary", "Origin"),
        ("RateLimit", '"x";r=1;t=2'),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Request-Id", "r1"),
        ("Connection", "close"),
    ]:
        expected.add(name, value)
    assert list(out.get_all()) == list(expected.get_all())
    assert out["Vary"] == "Accept,Origin"
    assert out.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert "X-Hop" not in out
    assert "Transfer-Encoding" not in out


# -- Forwarded (RFC 7239) written by the gateway ------------------------------------------


@pytest.mark.parametrize(
    ("address", "node"),
    [
        ("192.0.2.60", "192.0.2.60"),
        ("2001:db8:cafe::17", '"[2001:db8:cafe::17]"'),
        ("::1", '"[::1]"'),
        ("::ffff:192.0.2.1", '"[::ffff:192.0.2.1]"'),
        ("fe80::1%eth0", '"[fe80::1%eth0]"'),
        ("0.0.0.0", "unknown"),  # Tornado's stand-in for a Unix socket's peer
        ("", "unknown"),
        ("not-an-ip", "unknown"),
    ],
)
def test_forwarded_node(address: str, node: str) -> None:
    assert forwarded_node(address) == node


@pytest.mark.parametrize(
    ("host", "element"),
    [
        ("api.example.test", "for=192.0.2.60;proto=https;host=api.example.test"),
        ("api.example.test:8443", 'for=192.0.2.60;proto=https;host="api.example.test:8443"'),
        ("[2001:db8::1]:443", 'for=192.0.2.60;proto=https;host="[2001:db8::1]:443"'),
        (None, "for=192.0.2.60;proto=https"),
    ],
)
def test_forwarded_element(host: str | None, element: str) -> None:
    assert forwarded_element("192.0.2.60", "https", host) == element


def _forwarded(incoming: list[tuple[str, str]], *, trusted: bool, on: bool) -> list[str]:
    headers = HTTPHeaders()
    for name, value in [("Host", "a.test"), *incoming]:
        headers.add(name, value)
    out = upstream_request_headers(
        headers,
        client_ip="2001:db8::9",
        proto="http",
        request_id="r1",
        trust_forwarded=trusted,
        forwarded=on,
    )
    return [value for name, value in out if name == "Forwarded"]


CLAIM = [("Forwarded", "for=198.51.100.7;proto=https"), ("Forwarded", "for=_hidden")]
OURS = 'for="[2001:db8::9]";proto=http;host=a.test'


def test_the_gateway_appends_its_forwarded_element_to_a_trusted_proxys() -> None:
    # Obfuscated identifiers (_hidden) from a trusted proxy pass as they are.
    assert _forwarded(CLAIM, trusted=True, on=True) == [
        f"for=198.51.100.7;proto=https, for=_hidden, {OURS}"
    ]
    assert _forwarded([], trusted=True, on=True) == [OURS]


def test_the_gateway_replaces_an_untrusted_clients_forwarded() -> None:
    assert _forwarded(CLAIM, trusted=False, on=True) == [OURS]


def test_without_forwarded_header_a_trusted_proxys_forwarded_passes_alone() -> None:
    assert _forwarded(CLAIM, trusted=True, on=False) == [
        "for=198.51.100.7;proto=https",
        "for=_hidden",
    ]
    assert _forwarded(CLAIM, trusted=False, on=False) == []
