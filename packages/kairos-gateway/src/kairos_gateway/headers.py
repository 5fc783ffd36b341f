"""Header rewriting between client and backend (RFC 9110 section 7.6.1).

Pure functions over header lists so they can be tested without sockets. Tornado hands
the request headers over with names normalised to `Http-Header-Case`; response headers
come from the upstream client as sent by the backend.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from tornado.httputil import HTTPHeaders, _normalize_header

# Hop-by-hop headers (plus those listed in Connection) never cross the proxy. Host and
# Content-Length are set by the gateway; Expect is answered by the gateway, which
# buffers the request body before forwarding it.
_REQUEST_DROP = frozenset(
    {
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Te",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Expect",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Request-Id",
    }
)

#: With trace propagation the gateway writes these itself (a new span per try).
_REQUEST_DROP_TRACED = _REQUEST_DROP | {"Traceparent", "Tracestate"}

#: Client-address headers a backend may trust: dropped unless the peer is a trusted
#: proxy (the gateway's own account is X-Forwarded-For/-Proto/-Host).
_UNTRUSTED_DROP = frozenset({"Forwarded", "X-Real-Ip"})
#: With ``forwarded_header``, a trusted proxy's Forwarded is rewritten (ours appended).
_FORWARDED = frozenset({"Forwarded"})
_NONE: frozenset[str] = frozenset()

#: RFC 9110 token characters: such a Forwarded value needs no quotes.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_IPV4 = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[0-9A-Za-z._~-]+)?")

_RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-request-id",
    }
)


class _TrustsProxies(Protocol):
    def is_trusted_proxy(self, address: str) -> bool: ...


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")


def new_request_id() -> str:
    # Request ids only have to be unique, not unguessable; this is ~10x cheaper than uuid4.
    return f"{random.getrandbits(128):032x}"


def request_id_from(headers: HTTPHeaders) -> str:
    """The client's `X-Request-ID` when it is sane (short, no odd characters), else a new one."""
    value = headers.get("X-Request-Id")
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


def _normalise(name: str) -> str:
    return "-".join(part.capitalize() for part in name.strip().split("-"))


def _connection_tokens(value: str | None, *, normalise: bool) -> frozenset[str]:
    if not value:
        return frozenset()
    tokens = (t.strip() for t in value.split(","))
    if normalise:
        return frozenset(_normalise(t) for t in tokens if t)
    return frozenset(t.lower() for t in tokens if t)


def client_address(peer: str, headers: HTTPHeaders, snapshot: _TrustsProxies) -> str:
    """The client's address: the socket peer, unless the peer is a trusted proxy; then
    the nearest address in `X-Forwarded-For` (read right to left) that is not itself a
    trusted proxy. An untrusted peer's `X-Forwarded-For` is ignored: it can be forged.
    """
    if not snapshot.is_trusted_proxy(peer):
        return peer
    hops = [h.strip() for v in headers.get_list("X-Forwarded-For") for h in v.split(",")]
    address = peer
    for hop in reversed(hops):
        if not hop:
            continue
        address = hop
        if not snapshot.is_trusted_proxy(hop):
            break
    return address


def forwarded_node(address: str) -> str:
    """``address`` as an RFC 7239 node: an IPv4 address as it is, an IPv6 address
    bracketed and quoted (``"[2001:db8::1]"``), anything else (a Unix socket's peer,
    no address: Tornado's 0.0.0.0) ``unknown``."""
    if _IPV4.fullmatch(address):
        return address if address != "0.0.0.0" else "unknown"
    if _IPV6.fullmatch(address):
        return f'"[{address}]"'
    return "unknown"


def _forwarded_value(value: str) -> str:
    """A token as it is, anything else as a quoted-string (RFC 7239 4)."""
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwarded_element(peer: str, proto: str, host: str | None) -> str:
    """This hop's RFC 7239 ``Forwarded`` element: who connected to the gateway
    (``for``), over what (``proto``) and for which ``host`` (the client's Host)."""
    element = f"for={forwarded_node(peer)};proto={proto}"
    if host:
        element += f";host={_forwarded_value(host)}"
    return element


def upstream_request_headers(
    incoming: HTTPHeaders,
    *,
    client_ip: str,
    proto: str,
    request_id: str,
    trust_forwarded: bool,
    forwarded: bool = False,
    traced: bool = False,
    tracestate: str | None = None,
) -> list[tuple[str, str]]:
    """Headers to send to the backend for a client request with `incoming` headers,
    without `Host` (it depends on the backend, so it is added per try).

    `X-Forwarded-For` gets `client_ip` (the socket peer) appended.
    `X-Forwarded-Proto` / `-Host` are kept from the client only when it is a trusted
    proxy (`trust_forwarded`); otherwise they describe this hop. `Forwarded` and
    `X-Real-IP` are passed on only from a trusted proxy, never from a client.

    With ``forwarded`` (the ``forwarded_header`` setting) the gateway writes its own
    `Forwarded` element (`forwarded_element`, ``for`` the socket peer): appended to a
    trusted proxy's elements, or alone in place of a client's.

    With ``traced`` (trace propagation) the client's `traceparent` and `tracestate`
    are dropped: the gateway sends ``tracestate`` (the client's, checked and bounded)
    here and a `traceparent` per try (`forward`).
    """
    listed = _connection_tokens(incoming.get("Connection"), normalise=True)
    drop = _REQUEST_DROP_TRACED if traced else _REQUEST_DROP
    untrusted = _UNTRUSTED_DROP if not trust_forwarded else _FORWARDED if forwarded else _NONE
    out: list[tuple[str, str]] = []
    for name, value in incoming.get_all():
        if name in drop or name in listed or name in untrusted:
            continue
        out.append((name, value))
    prior = incoming.get_list("X-Forwarded-For")
    out.append(
        ("X-Forwarded-For", ", ".join([*prior, client_ip]) if prior else client_ip),
    )
    forwarded_proto = incoming.get("X-Forwarded-Proto") if trust_forwarded else None
    forwarded_host = incoming.get("X-Forwarded-Host") if trust_forwarded else None
    out.append(("X-Forwarded-Proto", forwarded_proto or proto))
    client_host = forwarded_host or incoming.get("Host")
    if client_host:
        out.append(("X-Forwarded-Host", client_host))
    out.append(("X-Request-Id", request_id))
    if tracestate:
        out.append(("Tracestate", tracestate))
    if forwarded:
        element = forwarded_element(client_ip, proto, incoming.get("Host"))
        prior = incoming.get_list("Forwarded") if trust_forwarded else []
        out.append(("Forwarded", ", ".join([*prior, element]) if prior else element))
    return out


def client_response_headers(
    upstream: Sequence[tuple[str, str]],
    *,
    request_id: str,
    close: bool,
    extra: Iterable[tuple[str, str]] = (),
    defaults: Iterable[tuple[str, str]] = (),
) -> HTTPHeaders:
    """Headers for the client from a backend's response: hop-by-hop ones removed,
    repeated ones (several Set-Cookie) kept, ``extra`` added (CORS, rate-limit fields),
    ``defaults`` added only where the backend sent no header of that name (security
    headers), `X-Request-ID` set.

    This runs on every proxied response, so it fills the `HTTPHeaders` in one pass
    (`fill_headers`) rather than through `HTTPHeaders.add`, which runs two regular
    expressions per header to validate it: names and values here come from the
    upstream parser (llhttp refuses malformed ones) or from the gateway itself, and
    Tornado still refuses CR or LF in any line it writes. With ``on_response`` hooks
    the same work is done in two steps, `client_response_pairs` then
    `complete_response_headers`, so the hooks see the headers in between.
    """
    # Inlined rather than composed of the two functions below: this is the hot path.
    listed: frozenset[str] = frozenset()
    for name, value in upstream:
        if name.lower() == "connection":
            listed = listed | _connection_tokens(value, normalise=False)
    pairs: list[tuple[str, str]] = []
    present: set[str] = set()
    for name, value in upstream:
        lname = name.lower()
        if lname in _RESPONSE_DROP or lname in listed:
            continue
        pairs.append((name, value))
        present.add(lname)
    pairs.extend(extra)
    for name, value in defaults:
        if name.lower() not in present:  # the backend's own choice wins
            pairs.append((name, value))
    pairs.append(("X-Request-Id", request_id))
    if close:
        pairs.append(("Connection", "close"))
    return fill_headers(pairs)


def client_response_pairs(
    upstream: Sequence[tuple[str, str]], extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """A backend's response headers without the hop-by-hop ones, plus ``extra``."""
    listed = _listed(upstream)
    pairs = [
        (name, value)
        for name, value in upstream
        if (lname := name.lower()) not in _RESPONSE_DROP and lname not in listed
    ]
    pairs.extend(extra)
    return pairs


def complete_response_headers(
    pairs: list[tuple[str, str]],
    *,
    request_id: str,
    close: bool,
    defaults: Iterable[tuple[str, str]] = (),
) -> HTTPHeaders:
    """``pairs`` with ``defaults`` where absent, `X-Request-ID` and, when closing,
    ``Connection: close``, as `HTTPHeaders`."""
    present = {name.lower() for name, _ in pairs}
    for name, value in defaults:
        if name.lower() not in present:
            pairs.append((name, value))
    pairs.append(("X-Request-Id", request_id))
    if close:
        pairs.append(("Connection", "close"))
    return fill_headers(pairs)


def _listed(upstream: Sequence[tuple[str, str]]) -> frozenset[str]:
    """Header names the response's ``Connection`` header lists (hop-by-hop too)."""
    listed: frozenset[str] = frozenset()
    for name, value in upstream:
        if name.lower() == "connection":
            listed = listed | _connection_tokens(value, normalise=False)
    return listed


def fill_headers(pairs: Iterable[tuple[str, str]]) -> HTTPHeaders:
    """An `HTTPHeaders` holding ``pairs`` (repeated names kept in order).

    Writes Tornado's field-line map (`_as_list`, from which it derives everything
    else lazily) directly, leaving it as `HTTPHeaders.add` would;
    `tests/gateway/test_headers.py` checks the result against `add`."""
    out = HTTPHeaders()
    lists = out._as_list
    for name, value in pairs:
        key = _normalize_header(name)
        seen = lists.get(key)
        if seen is None:
            lists[key] = [value]
        else:
            seen.append(value)
    return out


def header_value(headers: Sequence[tuple[str, str]], lower_name: str) -> str | None:
    """The first value of a header (``lower_name``: its name in lower case), or None."""
    for name, value in headers:
        if name.lower() == lower_name:
            return value
    return None
