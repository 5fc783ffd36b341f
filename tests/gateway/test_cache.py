"""The bundled ``cache`` plugin against a real origin that sets the caching headers the
test asks for and counts what it is asked."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from kairos_core import ConfigError, load_config
from kairos_gateway import PluginRegistry
from kairos_gateway import cache as cache_package
from kairos_gateway.cache import CacheStats
from kairos_gateway.cache.rfc import http_date
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from tests.conftest import GatewayFactory, RunningGateway
from tests.support import eventually, raw_request, route


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"hello"


@dataclass
class Origin:
    """Answers ``/<name>`` with ``replies[name]`` (an ``ETag`` it sets makes it answer a
    matching ``If-None-Match`` with 304), counting requests per name."""

    replies: dict[str, Reply] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    seen: list[dict[str, str]] = field(default_factory=list)
    #: While set, responses wait for it (coalescing).
    hold: asyncio.Event | None = None
    #: Seconds every response waits before it is sent.
    delay_s: float = 0.0
    port: int = 0
    server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(
        self, name: str, *headers: tuple[str, str], status: int = 200, body: bytes = b""
    ) -> None:
        self.replies[name] = Reply(status, list(headers), body or f"body of {name}".encode())


class _Handler(web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    def compute_etag(self) -> None:
        return None  # only the ETags a test sets

    async def get(self, name: str) -> None:
        origin = self.origin
        origin.hits[name] += 1
        origin.seen.append(dict(self.request.headers))
        if origin.hold is not None:
            await origin.hold.wait()
        if origin.delay_s:
            await asyncio.sleep(origin.delay_s)
        reply = origin.replies.get(name, Reply(404, [], b"none"))
        self.set_status(reply.status)
        named: set[str] = set()
        for k, v in reply.headers:
            (self.add_header if k.lower() in named else self.set_header)(k, v)
            named.add(k.lower())
        etag = dict((k.lower(), v) for k, v in reply.headers).get("etag")
        if etag is not None and self.request.headers.get("If-None-Match") == etag:
            self.set_status(304)
            self.finish()
            return
        body = reply.body
        if name.startswith("vary"):
            body += b" for " + self.request.headers.get("Accept-Language", "-").encode()
        self.finish(body)

    post = get
    head = get


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    o = Origin()
    sock, o.port = bind_unused_port()
    o.server = HTTPServer(web.Application([(r"/(.*)", _Handler, {"origin": o})]))
    o.server.add_sockets([sock])
    yield o
    o.server.stop()
    await o.server.close_all_connections()


def cache(**config: Any) -> list[dict[str, Any]]:
    return [{"name": "cache", "config": config}]


async def gateway(gateway_factory: GatewayFactory, origin: Origin | str, **config: Any) -> int:
    gw = await gateway_factory(
        {
            "version": 1,
            "routers": [route("/c/{*rest}", "/{*rest}", [origin], plugins=cache(**config))],
        }
    )
    return gw.port


async def get(port: int, path: str, *headers: tuple[str, str], method: str = "GET") -> Any:
    return await raw_request(port, f"/c/{path}", method=method, headers=list(headers))


async def test_a_fresh_response_is_served_from_the_cache_with_age_and_x_cache(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"), ("Content-Type", "text/plain"))
    port = await gateway(gateway_factory, origin)
    first = await get(port, "a")
    assert first.status == 200
    assert first.header("X-Cache") == "MISS"
    second = await get(port, "a")
    assert second.status == 200
    assert second.body == b"body of a"
    assert second.header("X-Cache") == "HIT"
    assert second.header("Content-Type") == "text/plain"
    assert second.header("Age") is not None
    assert int(second.header("Age")) >= 0
    assert second.header("Content-Length") == str(len(b"body of a"))
    assert origin.hits["a"] == 1
    head = await get(port, "a", method="HEAD")
    assert head.status == 200
    assert head.header("X-Cache") == "HIT"
    assert head.body == b""
    assert origin.hits["a"] == 1


async def test_age_from_upstream_counts_against_freshness(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("old", ("Cache-Control", "max-age=60"), ("Age", "60"))
    origin.reply("young", ("Cache-Control", "max-age=60"), ("Age", "30"))
    port = await gateway(gateway_factory, origin)
    for _ in range(2):
        await get(port, "old")
        await get(port, "young")
    assert origin.hits["old"] == 2
    assert origin.hits["young"] == 1
    assert int((await get(port, "young")).header("Age")) >= 30


async def test_expires_gives_freshness_and_an_expired_one_none(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    now = time.time()
    origin.reply("later", ("Date", http_date(now)), ("Expires", http_date(now + 300)))
    # Sent an hour ago, fresh for five minutes after that: already stale on arrival.
    origin.reply("aged", ("Date", http_date(now - 3600)), ("Expires", http_date(now - 3300)))
    origin.reply("past", ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"))
    origin.reply("bad", ("Expires", "0"))
    port = await gateway(gateway_factory, origin)
    for name in ("later", "aged", "past", "bad"):
        await get(port, name)
        await get(port, name)
    assert origin.hits == Counter({"later": 1, "aged": 2, "past": 2, "bad": 2})


async def test_no_freshness_information_is_not_stored_unless_a_default_ttl_is_set(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("plain")
    port = await gateway(gateway_factory, origin)
    await get(port, "plain")
    assert (await get(port, "plain")).header("X-Cache") == "MISS"
    assert origin.hits["plain"] == 2
    port = await gateway(gateway_factory, origin, default_ttl_s=60)
    await get(port, "plain")
    assert (await get(port, "plain")).header("X-Cache") == "HIT"
    assert origin.hits["plain"] == 3


async def test_no_store_and_private_responses_are_not_stored(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("nostore", ("Cache-Control", "no-store, max-age=60"))
    origin.reply("private", ("Cache-Control", "private, max-age=60"))
    origin.reply("cookie", ("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1"))
    origin.reply("vary-star", ("Cache-Control", "max-age=60"), ("Vary", "*"))
    port = await gateway(gateway_factory, origin)
    for name in ("nostore", "private", "cookie", "vary-star"):
        await get(port, name)
        assert (await get(port, name)).header("X-Cache") == "MISS"
        assert origin.hits[name] == 2


async def test_a_client_no_store_bypasses_and_no_cache_reloads(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("a", ("Cache-Control", "max-age=60"))
    port = await gateway(gateway_factory, origin)
    assert (await get(port, "a", ("Cache-Control", "no-store"))).header("X-Cache") == "BYPASS"
    await get(port, "a")
    assert (await get(port, "a", ("Cache-Control", "no-cache"))).header("X-Cache") == "MISS"
    assert (await get(port, "a")).header("X-Cache") == "HIT"
    assert origin.hits["a"] == 3


async def test_authorization_is_served_from_the_cache_only_for_public_responses(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("mine", ("Cache-Control", "max-age=60"))
    origin.reply("shared", ("Cache-Control", "public, max-age=60"))
    origin.reply("smax", ("Cache-Control", "s-maxage=60"))
    port = await gateway(gateway_factory, origin)
    alice = ("Authorization", "Bearer alice")
    # Stored from an anonymous request, never given to one with credentials.
    await get(port, "mine")
    assert (await get(port, "mine")).header("X-Cache") == "HIT"
    got = await get(port, "mine", alice)
    assert got.header("X-Cache") == "BYPASS"
    assert origin.hits["mine"] == 2
    # A response to a request with credentials is not stored unless it says so.
    await get(port, "fresh-private", alice)
    for name in ("shared", "smax"):
        await get(port, name, alice)
        again = await get(port, name, ("Authorization", "Bearer bob"))
        assert again.header("X-Cache") == "HIT", name
        assert origin.hits[name] == 1


async def test_a_private_response_is_not_stored_with_or_without_authorization(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("p", ("Cache-Control", "private, max-age=60"))
    port = await gateway(gateway_factory, origin)
    for headers in ([], [("Authorization", "Bearer a")]):
        await get(port, "p", *headers)
        await get(port, "p", *headers)
    assert origin.hits["p"] == 4


async def test_a_key_with_the_user_caches_per_caller(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("me", ("Cache-Control", "max-age=60"))
    port = await gateway(gateway_factory, origin, key={"user": True})
    alice, bob = ("Authorization", "Bearer alice"), ("Authorization", "Bearer bob")
    await get(port, "me", alice)
    assert (await get(port, "me", alice)).header("X-Cache") == "HIT"
    assert (await get(port, "me", bob)).header("X-Cache") == "MISS"
    assert origin.hits["me"] == 2


async def test_vary_keeps_variants_apart_and_normalises_values(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("vary", ("Cache-Control", "max-age=60"), ("Vary", "Accept-Language"))
    port = await gateway(gateway_factory, origin)
    en = await get(port, "vary", ("Accept-Language", "en, fr"))
    de = await get(port, "vary", ("Accept-Language", "de"))
    assert en.body.endswith(b"en, fr")
    assert de.body.endswith(b"de")
    again = await get(port, "vary", ("Accept-Language", "EN,   FR"))
    assert again.header("X-Cache") == "HIT"
    assert again.body.endswith(b"en, fr")
    assert (await get(port, "vary", ("Accept-Language", "de"))).body.endswith(b"de")
    assert origin.hits["vary"] == 2


async def test_the_key_keeps_selected_query_parameters_and_headers(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("q", ("Cache-Control", "max-age=60"))
    port = await gateway(gateway_factory, origin, key={"query": ["page"], "headers": ["X-Tenant"]})
    await get(port, "q?page=1&utm=a")
    assert (await get(port, "q?utm=b&page=1")).header("X-Cache") == "HIT"
    assert (await get(port, "q?page=2")).header("X-Cache") == "MISS"
    assert (await get(port, "q?page=1", ("X-Tenant", "t2"))).header("X-Cache") == "MISS"
    assert origin.hits["q"] == 3


async def test_a_client_revalidating_gets_a_304_from_the_cache(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply(
        "v",
        ("Cache-Control", "max-age=60"),
        ("ETag", '"v1"'),
        ("Last-Modified", "Mon, 07 Dec 2026 10:00:00 GMT"),
    )
    port = await gateway(gateway_factory, origin)
    await get(port, "v")
    match = await get(port, "v", ("If-None-Match", 'W/"v1", "v0"'))
    assert match.status == 304
    assert match.body == b""
    assert match.header("ETag") == '"v1"'
    assert (await get(port, "v", ("If-None-Match", '"v2"'))).status == 200
    since = await get(port, "v", ("If-Modified-Since", "Mon, 07 Dec 2026 11:00:00 GMT"))
    assert since.status == 304
    earlier = await get(port, "v", ("If-Modified-Since", "Mon, 07 Dec 2026 09:00:00 GMT"))
    assert earlier.status == 200
    assert origin.hits["v"] == 1


async def test_a_stale_entry_is_revalidated_upstream_and_a_304_refreshes_it(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("r", ("Cache-Control", "max-age=0"), ("ETag", '"r1"'), body=b"stored body")
    port = await gateway(gateway_factory, origin)
    assert (await get(port, "r")).body == b"stored body"
    origin.reply("r", ("Cache-Control", "max-age=60"), ("ETag", '"r1"'), body=b"not sent")
    again = await get(port, "r")
    assert again.status == 200
    assert again.body == b"stored body"
    assert again.header("X-Cache") == "HIT"
    assert origin.seen[-1].get("If-None-Match") == '"r1"'
    # The 304's max-age=60 now makes it fresh: no more trips upstream.
    assert (await get(port, "r")).header("X-Cache") == "HIT"
    assert origin.hits["r"] == 2
    conditional = await get(port, "r", ("If-None-Match", '"r1"'))
    assert conditional.status == 304


async def test_a_changed_resource_replaces_the_entry(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("r", ("Cache-Control", "max-age=0"), ("ETag", '"r1"'), body=b"one")
    port = await gateway(gateway_factory, origin)
    await get(port, "r")
    origin.reply("r", ("Cache-Control", "max-age=60"), ("ETag", '"r2"'), body=b"two")
    assert (await get(port, "r")).body == b"two"
    hit = await get(port, "r")
    assert (hit.body, hit.header("X-Cache")) == (b"two", "HIT")


async def test_stale_if_error_serves_the_stale_entry_when_the_backend_fails(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("e", ("Cache-Control", "max-age=0, stale-if-error=60"), body=b"good")
    origin.reply("strict", ("Cache-Control", "max-age=0, must-revalidate, stale-if-error=60"))
    port = await gateway(gateway_factory, origin)
    await get(port, "e")
    await get(port, "strict")
    origin.reply("e", status=503, body=b"broken")
    origin.reply("strict", status=503, body=b"broken")
    stale = await get(port, "e")
    assert (stale.status, stale.body, stale.header("X-Cache")) == (200, b"good", "STALE")
    assert (await get(port, "strict")).status == 503


async def test_stale_if_error_when_the_backend_is_down(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("e", ("Cache-Control", "max-age=0, stale-if-error=60"), body=b"good")
    port = await gateway(gateway_factory, origin)
    await get(port, "e")
    assert origin.server is not None
    origin.server.stop()
    await origin.server.close_all_connections()
    stale = await get(port, "e")
    assert stale.status == 200
    assert stale.body == b"good"
    assert stale.header("X-Cache") == "STALE"
    assert stale.header("Content-Length") == "4"
    assert (await get(port, "other")).status in (502, 503)


async def test_concurrent_misses_make_one_upstream_request(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("hot", ("Cache-Control", "max-age=60"), body=b"x" * 10_000)
    origin.hold = asyncio.Event()
    port = await gateway(gateway_factory, origin)
    requests = [asyncio.ensure_future(get(port, "hot")) for _ in range(50)]
    await eventually(lambda: origin.hits["hot"] == 1)
    origin.hold.set()
    responses = await asyncio.gather(*requests)
    assert origin.hits["hot"] == 1
    assert all(r.status == 200 and r.body == b"x" * 10_000 for r in responses)
    labels = Counter(r.header("X-Cache") for r in responses)
    assert labels["MISS"] == 1
    assert labels["HIT"] == 49


async def test_objects_over_the_size_limit_pass_through_unstored(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("big", ("Cache-Control", "max-age=60"), body=b"b" * 5000)
    port = await gateway(gateway_factory, origin, max_object_bytes=4096)
    assert (await get(port, "big")).body == b"b" * 5000
    assert (await get(port, "big")).header("X-Cache") == "MISS"
    assert origin.hits["big"] == 2


async def test_the_memory_store_evicts_the_least_recently_used(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    for name in ("a", "b", "c"):
        origin.reply(name, ("Cache-Control", "max-age=60"), body=name.encode() * 700)
    port = await gateway(gateway_factory, origin, store={"type": "memory", "max_bytes": 2400})
    await get(port, "a")
    await get(port, "b")
    assert (await get(port, "a")).header("X-Cache") == "HIT"  # b is now the oldest used
    await get(port, "c")
    assert (await get(port, "a")).header("X-Cache") == "HIT"
    assert (await get(port, "b")).header("X-Cache") == "MISS"


async def test_a_successful_unsafe_request_invalidates_the_entry(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("u", ("Cache-Control", "max-age=60"))
    port = await gateway(gateway_factory, origin)
    await get(port, "u")
    assert (await get(port, "u")).header("X-Cache") == "HIT"
    await get(port, "u", method="POST")
    assert (await get(port, "u")).header("X-Cache") == "MISS"


def test_settings_errors_name_the_field() -> None:
    config = load_config(
        {
            "version": 1,
            "routers": [
                route(
                    "/a",
                    "/a",
                    ["http://127.0.0.1:1"],
                    plugins=cache(store={"type": "memory", "max_bytes": 10}),
                )
            ],
        }
    )
    with pytest.raises(ConfigError) as caught:
        PluginRegistry(group=None).check(config)
    assert (
        "routers[0].plugins[0].config.store.memory.max_bytes: Input should be greater than "
        "or equal to 1024 (got 10)"
    ) in str(caught.value)


def store_stats(gw: RunningGateway) -> CacheStats:
    (cache_,) = gw.gateway.runtime.caches()
    return cache_.store.stats


async def test_stale_while_revalidate_answers_at_once_and_refreshes_in_the_background(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("s", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/c/{*rest}", "/{*rest}", [origin], plugins=cache())]}
    )
    await get(gw.port, "s")
    started = store_stats(gw).revalidations  # the store may be an earlier test's
    origin.reply("s", ("Cache-Control", "max-age=60"), body=b"new")
    # The backend answers nothing until released: every answer below is the cache's.
    origin.hold = asyncio.Event()
    answers = await asyncio.wait_for(
        asyncio.gather(*(get(gw.port, "s") for _ in range(20))), timeout=2
    )
    for answer in answers:
        assert (answer.status, answer.body, answer.header("X-Cache")) == (200, b"old", "STALE")
        assert answer.header("Age") is not None
    await eventually(lambda: origin.hits["s"] == 2)
    assert store_stats(gw).revalidations == started + 1
    origin.hold.set()

    async def refreshed() -> bool:
        answer = await get(gw.port, "s")
        return bool(answer.body == b"new" and answer.header("X-Cache") == "HIT")

    await eventually(refreshed)
    assert origin.hits["s"] == 2  # one background request for all twenty


async def test_a_slow_backend_does_not_delay_the_stale_answer(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("slow", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    port = await gateway(gateway_factory, origin)
    await get(port, "slow")
    origin.delay_s = 1.0
    started = time.perf_counter()
    stale = await get(port, "slow")
    assert time.perf_counter() - started < 0.5
    assert (stale.body, stale.header("X-Cache")) == (b"old", "STALE")
    await eventually(lambda: origin.hits["slow"] == 2)


async def test_a_background_304_refreshes_the_entry_through_the_routes_policies(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    swr = ("Cache-Control", "max-age=0, stale-while-revalidate=60")
    origin.reply("v", swr, ("ETag", '"v1"'), ("X-Version", "1"), body=b"same body")
    plugins = [
        *cache(),
        {"name": "transform", "config": {"request": {"headers": {"set": {"X-Via": "cache"}}}}},
    ]
    port = (
        await gateway_factory(
            {"version": 1, "routers": [route("/c/{*rest}", "/{*rest}", [origin], plugins=plugins)]}
        )
    ).port
    await get(port, "v")
    origin.reply("v", ("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("X-Version", "2"))
    # The client's own conditionals and range are not the background request's.
    stale = await get(port, "v", ("If-None-Match", '"other"'))
    assert (stale.status, stale.header("X-Cache"), stale.header("X-Version")) == (
        200,
        "STALE",
        "1",
    )
    await eventually(lambda: origin.hits["v"] == 2)
    background = origin.seen[-1]
    assert background.get("If-None-Match") == '"v1"'
    assert background.get("X-Via") == "cache"  # the chain's before_upstream ran

    async def refreshed() -> bool:
        answer = await get(port, "v")
        return bool(answer.header("X-Cache") == "HIT" and answer.header("X-Version") == "2")

    await eventually(refreshed)
    hit = await get(port, "v")
    assert (hit.status, hit.body) == (200, b"same body")
    assert origin.hits["v"] == 2


async def test_a_failed_background_revalidation_keeps_the_stale_entry(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("f", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/c/{*rest}", "/{*rest}", [origin], plugins=cache())]}
    )
    await get(gw.port, "f")
    stats = store_stats(gw)  # the store may be an earlier test's (same settings)
    before = stats.revalidations, stats.revalidation_errors
    origin.reply("f", status=503, body=b"down")
    first = await get(gw.port, "f")
    assert (first.body, first.header("X-Cache")) == (b"old", "STALE")
    await eventually(lambda: stats.revalidation_errors == before[1] + 1)
    again = await get(gw.port, "f")
    assert (again.body, again.header("X-Cache")) == (b"old", "STALE")
    await eventually(lambda: origin.hits["f"] == 3)
    assert stats.revalidations == before[0] + 2


async def test_a_background_answer_that_may_not_be_stored_removes_the_stale_entry(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("g", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    port = await gateway(gateway_factory, origin)
    await get(port, "g")
    origin.reply("g", ("Cache-Control", "no-store"), body=b"now private")
    assert (await get(port, "g")).header("X-Cache") == "STALE"
    await eventually(lambda: origin.hits["g"] == 2)

    async def gone() -> bool:
        answer = await get(port, "g")
        return bool(answer.header("X-Cache") == "MISS" and answer.body == b"now private")

    await eventually(gone)


async def test_must_revalidate_and_no_cache_entries_are_never_served_stale(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    swr = "stale-while-revalidate=60"
    origin.reply("m", ("Cache-Control", f"max-age=0, must-revalidate, {swr}"), body=b"old")
    origin.reply("n", ("Cache-Control", f"no-cache, {swr}"), ("ETag", '"n1"'), body=b"old")
    port = await gateway(gateway_factory, origin)
    for name in ("m", "n"):
        await get(port, name)
        origin.reply(name, ("Cache-Control", f"max-age=0, {swr}"), body=b"new")
        answer = await get(port, name)
        assert answer.header("X-Cache") != "STALE"
        assert answer.body == b"new"  # the client waited for the backend
        assert origin.hits[name] == 2


async def test_past_the_process_cap_a_stale_request_revalidates_itself(
    origin: Origin, gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_package, "MAX_REVALIDATIONS", 0)
    origin.reply("c", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    port = await gateway(gateway_factory, origin)
    await get(port, "c")
    origin.reply("c", ("Cache-Control", "max-age=60"), body=b"new")
    answer = await get(port, "c")
    assert (answer.body, answer.header("X-Cache")) == (b"new", "MISS")


async def test_stopping_the_gateway_ends_a_background_revalidation(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("x", ("Cache-Control", "max-age=0, stale-while-revalidate=60"), body=b"old")
    gw = await gateway_factory(
        {"version": 1, "routers": [route("/c/{*rest}", "/{*rest}", [origin], plugins=cache())]}
    )
    await get(gw.port, "x")
    origin.hold = asyncio.Event()
    assert (await get(gw.port, "x")).header("X-Cache") == "STALE"
    await eventually(lambda: origin.hits["x"] == 2)
    (shared,) = gw.gateway.runtime.caches()
    assert shared.inflight
    await gw.gateway.stop(drain_timeout_s=1)
    assert not shared.inflight
    assert all(s.inflight == 0 for s in gw.gateway.runtime.registry)
    origin.hold.set()


def test_the_plugin_is_bundled_and_listed_between_jwt_and_rate_limits() -> None:
    registry = PluginRegistry(group=None)
    names = [p.name for p in registry.catalog().plugins]
    assert names.index("jwt") < names.index("cache") < names.index("rate_limit")
    info = next(p for p in registry.catalog().plugins if p.name == "cache")
    assert info.package == "kairos-gateway"
    assert info.priority == 1000
    assert info.phases == [
        "on_request",
        "before_upstream",
        "on_response",
        "on_chunk",
        "on_complete",
    ]


DIGITS = b"0123456789abcdef"


async def test_a_single_range_of_a_fresh_entry_is_answered_from_the_cache(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("r", ("Cache-Control", "max-age=60"), ("Content-Type", "text/x"), body=DIGITS)
    port = await gateway(gateway_factory, origin)
    await get(port, "r")
    whole = await get(port, "r")
    assert (whole.status, whole.body, whole.header("Accept-Ranges")) == (200, DIGITS, "bytes")
    for asked, content_range, part in [
        ("bytes=2-5", "bytes 2-5/16", b"2345"),
        ("bytes=10-", "bytes 10-15/16", b"abcdef"),
        ("bytes=-3", "bytes 13-15/16", b"def"),
        ("bytes=5-100", "bytes 5-15/16", b"56789abcdef"),
        ("bytes=-100", "bytes 0-15/16", DIGITS),
        ("bytes=0-0", "bytes 0-0/16", b"0"),
        ("bytes=15-15", "bytes 15-15/16", b"f"),
        (" BYTES = 3-4", "bytes 3-4/16", b"34"),
    ]:
        ranged = await get(port, "r", ("Range", asked))
        assert ranged.status == 206, asked
        assert ranged.body == part, asked
        assert ranged.header("Content-Range") == content_range, asked
        assert ranged.header("Content-Length") == str(len(part)), asked
        assert ranged.header("Content-Type") == "text/x"
        assert ranged.header("X-Cache") == "HIT"
        assert ranged.header("Accept-Ranges") == "bytes"
    head = await get(port, "r", ("Range", "bytes=2-5"), method="HEAD")
    assert (head.status, head.header("Content-Length")) == (200, "16")  # HEAD: no ranges
    assert origin.hits["r"] == 1


async def test_an_unsatisfiable_range_is_a_416_with_the_length(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("r", ("Cache-Control", "max-age=60"), body=DIGITS)
    port = await gateway(gateway_factory, origin)
    await get(port, "r")
    for asked in ("bytes=16-", "bytes=100-200", "bytes=-0"):
        refused = await get(port, "r", ("Range", asked))
        assert refused.status == 416, asked
        assert refused.header("Content-Range") == "bytes */16"
        assert refused.body == b""
    assert origin.hits["r"] == 1


async def test_several_ranges_or_a_malformed_range_get_the_whole_response(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("r", ("Cache-Control", "max-age=60"), body=DIGITS)
    port = await gateway(gateway_factory, origin)
    await get(port, "r")
    for asked in ("bytes=0-1,3-4", "bytes=5-2", "items=0-1", "bytes=abc", "bytes=1", "bytes=-"):
        whole = await get(port, "r", ("Range", asked))
        assert (whole.status, whole.body, whole.header("X-Cache")) == (200, DIGITS, "HIT"), asked
        assert whole.header("Content-Range") is None
    assert origin.hits["r"] == 1


async def test_if_range_serves_the_range_only_while_it_names_the_entry(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    modified = http_date(time.time() - 3600)
    origin.reply(
        "r",
        ("Cache-Control", "max-age=60"),
        ("ETag", '"e1"'),
        ("Last-Modified", modified),
        body=DIGITS,
    )
    origin.reply("w", ("Cache-Control", "max-age=60"), ("ETag", 'W/"w1"'), body=DIGITS)
    port = await gateway(gateway_factory, origin)
    await get(port, "r")
    await get(port, "w")
    part = ("Range", "bytes=0-3")
    for name, validator, status in [
        ("r", '"e1"', 206),
        ("r", '"e2"', 200),
        ("r", 'W/"e1"', 200),  # a weak tag never matches (strong comparison)
        ("r", modified, 206),
        ("r", http_date(time.time() - 7200), 200),
        ("r", "not a date", 200),
        ("w", 'W/"w1"', 200),  # nor does a weak stored one
    ]:
        answer = await get(port, name, part, ("If-Range", validator))
        assert answer.status == status, validator
        assert answer.body == (b"0123" if status == 206 else DIGITS)
        assert answer.header("X-Cache") == "HIT"
    assert origin.hits == Counter({"r": 1, "w": 1})


async def test_a_range_miss_goes_to_the_backend_and_nothing_partial_is_stored(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("r", ("Cache-Control", "max-age=60"), body=DIGITS)
    origin.reply(
        "p", ("Cache-Control", "max-age=60"), ("Content-Range", "bytes 0-1/16"), status=206
    )
    port = await gateway(gateway_factory, origin, statuses=[200, 206])
    first = await get(port, "r", ("Range", "bytes=0-1"))
    assert (first.status, first.header("X-Cache")) == (200, "MISS")  # the origin's answer
    assert origin.seen[-1].get("Range") == "bytes=0-1"
    assert (await get(port, "r")).header("X-Cache") == "MISS"  # not stored by the range
    ranged = await get(port, "r", ("Range", "bytes=0-1"))
    assert (ranged.status, ranged.body, ranged.header("X-Cache")) == (206, b"01", "HIT")
    assert origin.hits["r"] == 2
    for _ in range(2):
        partial = await get(port, "p")
        assert (partial.status, partial.header("X-Cache")) == (206, "MISS")
    assert origin.hits["p"] == 2


async def test_a_no_cache_response_is_revalidated_before_every_use(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("n", ("Cache-Control", "no-cache"), ("ETag", '"n1"'), body=b"kept")
    port = await gateway(gateway_factory, origin)
    await get(port, "n")
    for _ in range(2):
        again = await get(port, "n")
        assert (again.status, again.body, again.header("X-Cache")) == (200, b"kept", "HIT")
        assert origin.seen[-1].get("If-None-Match") == '"n1"'
    assert origin.hits["n"] == 3


async def test_a_head_miss_is_not_stored_and_a_get_fills_what_head_reads(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    origin.reply("h", ("Cache-Control", "max-age=60"))
    port = await gateway(gateway_factory, origin)
    assert (await get(port, "h", method="HEAD")).header("X-Cache") == "MISS"
    assert (await get(port, "h", method="HEAD")).header("X-Cache") == "MISS"
    await get(port, "h")
    head = await get(port, "h", method="HEAD")
    assert (head.header("X-Cache"), head.body) == ("HIT", b"")
    assert head.header("Content-Length") == str(len(b"body of h"))


async def test_authentication_runs_before_the_cache(
    origin: Origin, gateway_factory: GatewayFactory
) -> None:
    secret = "a-cache-test-secret-of-32-bytes-long!"
    origin.reply("p", ("Cache-Control", "public, max-age=60"))
    gw = await gateway_factory(
        {
            "version": 1,
            "jwt_secret": secret,
            "routers": [
                route("/c/{*rest}", "/{*rest}", [origin], auth_required=True, plugins=cache())
            ],
        }
    )
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 300}, secret, "HS256")
    bearer = ("Authorization", f"Bearer {token}")
    await get(gw.port, "p", bearer)
    assert (await get(gw.port, "p", bearer)).header("X-Cache") == "HIT"
    refused = await get(gw.port, "p")
    assert refused.status == 401
    assert refused.header("X-Cache") is None
