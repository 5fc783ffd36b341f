"""Header rewriting, pure: no sockets."""

from __future__ import annotations

from kairos_gateway.headers import client_response_headers
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
