"""The ``cache`` plugin: an RFC 9111 shared cache in front of a route.

Phases (see docs/cache.md for the rules):

- ``on_request``: GET/HEAD only. A fresh entry answers at once (``X-Cache: HIT``,
  ``Age``; a 304 when the client's ``If-None-Match``/``If-Modified-Since`` matches; a
  206 or 416 for a single byte ``Range``). A stale entry within
  ``stale-while-revalidate`` answers at once too (``STALE``) and starts a background
  revalidation (`Request.replay`). A miss marks the request; the first miss for a key
  holds the key, concurrent ones wait for its response (bounded by
  ``lock_timeout_s``) and are answered from it. A ``Range`` miss passes through.
- ``before_upstream``: revalidating a stale entry sends its validators upstream.
- ``on_response``: a backend's 304 refreshes the entry and answers from it; a 5xx (or
  the gateway's own 502/503/504 when the backend is down) is replaced by the stale
  entry within ``stale-if-error``; a storable response is captured.
- ``on_chunk``: the body is kept as it streams to the client, up to
  ``max_object_bytes``.
- ``on_complete``: a response that arrived whole is stored; the key is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Coroutine, Iterable, Mapping
from dataclasses import replace
from typing import Any, Final
from urllib.parse import unquote_plus

from kairos_core.cache import CacheConfig

from ..cache import Entry, Purge, SharedCache, shared_cache
from ..cache.rfc import (
    UNSATISFIABLE,
    byte_range,
    directives,
    freshness,
    if_range_matches,
    not_modified,
    parse_date,
    seconds,
    vary_names,
)
from ..chain import Policy, Replayed, Request, ResponseHead, UpstreamRequest
from ..messages import Response, reason_phrase

__all__ = ["CachePolicy", "cache_policy"]

_CACHEABLE_METHODS: Final = frozenset({"GET", "HEAD"})
_UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ERRORS: Final = frozenset({500, 502, 503, 504})
_CONDITIONALS: Final = frozenset(
    {"if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range"}
)
#: Never stored with an entry: per exchange, or recomputed when served.
_NOT_STORED: Final = frozenset(
    {"content-length", "age", "x-cache", "x-request-id", "connection", "transfer-encoding"}
)
#: A 304 does not change these of the stored response (RFC 9111 4.3.4).
_KEPT_ON_304: Final = frozenset(
    {"content-length", "content-encoding", "content-type", "accept-ranges"}
)

HIT, MISS, STALE, BYPASS = "HIT", "MISS", "STALE", "BYPASS"


class _State:
    """What the policy knows of one request (``request.state["cache"]``)."""

    __slots__ = (
        "answer",
        "capture",
        "captured",
        "ended",
        "entry",
        "label",
        "leader",
        "meta",
        "primary",
        "revalidating",
        "size",
    )

    def __init__(self, primary: str, label: str) -> None:
        self.primary = primary
        self.label = label
        #: The stored entry this request may revalidate or fall back on.
        self.entry: Entry | None = None
        self.revalidating = False
        #: This request holds the key: concurrent misses wait for it.
        self.leader = False
        #: Body to send instead of the backend's (a 304 refreshed, a stale fallback).
        self.answer: bytes | None = None
        #: The entry being captured (None: nothing to store).
        self.meta: Entry | None = None
        self.capture: list[bytes] | None = None
        self.captured = 0
        self.size: int | None = None
        self.ended = False


def _pairs(headers: Mapping[str, str], name: str) -> list[str]:
    get_list = getattr(headers, "get_list", None)
    if get_list is not None:
        return list(get_list(name))
    value = headers.get(name)
    return [] if value is None else [value]


def _get(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in pairs if n.lower() == name]


class CachePolicy(Policy):
    """The compiled ``cache`` settings of one route."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.cache: SharedCache = shared_cache(config.store)
        self.stats = self.cache.store.stats
        self._memory = getattr(self.cache.store, "lookup", None)
        key = config.key
        self._query = None if key.query is None else frozenset(key.query)
        self._headers = tuple(key.headers)
        self._statuses = frozenset(config.statuses)
        self._tag_header = config.tag_header.lower()

    # -- the key -------------------------------------------------------------------

    def primary_key(self, request: Request) -> str:
        key = self.config.key
        host = request.headers.get("Host", "").lower() if key.host else ""
        pieces = [p for p in request.query.split("&") if p] if request.query else []
        if self._query is not None:
            pieces = [p for p in pieces if unquote_plus(p.partition("=")[0]) in self._query]
        pieces.sort()
        text = f"{host}{request.path}"
        if pieces:
            text += "?" + "&".join(pieces)
        for name in self._headers:
            text += f"|{name.lower()}={request.headers.get(name, '')}"
        if key.user:
            claims = request.claims
            user = claims.get("sub") if claims is not None else None
            if user is None:
                credentials = request.headers.get("Authorization", "")
                user = hashlib.sha256(credentials.encode()).hexdigest()[:32] if credentials else ""
            text += f"|user={user}"
        return text

    # -- on_request ----------------------------------------------------------------

    def on_request(self, request: Request) -> Response | Awaitable[Response | None] | None:
        method = request.method
        headers = request.headers
        if method not in _CACHEABLE_METHODS:
            return None
        cc = directives(_pairs(headers, "Cache-Control")) if "Cache-Control" in headers else {}
        if "no-store" in cc:
            self._bypass(request)
            return None
        primary = self.primary_key(request)
        lookup = self._memory
        credentials = "Authorization" in headers and not self.config.key.user
        entry = None
        if lookup is not None:
            entry = lookup(primary, headers)
            if entry is not None and not cc and not credentials:
                # The common hit: nothing in the request to weigh.
                now = time.time()
                if entry.fresh(now) and "Pragma" not in headers:
                    self.stats.hits += 1
                    return self._answer(request, entry, now, HIT)
        state = _State(primary, BYPASS if credentials else MISS)
        request.state["cache"] = state
        reload = (
            "no-cache" in cc
            or seconds(cc.get("max-age")) == 0
            or (not cc and "no-cache" in headers.get("Pragma", ""))
        )
        if lookup is not None:
            return self._decide(request, state, entry, reload, waited=False)
        return self._lookup_then_decide(request, state, reload)

    async def _lookup_then_decide(
        self, request: Request, state: _State, reload: bool
    ) -> Response | None:
        entry = await self._get(state.primary, request.headers)
        answer = self._decide(request, state, entry, reload, waited=False)
        if answer is None or isinstance(answer, Response):
            return answer
        return await answer

    async def _get(self, primary: str, headers: Mapping[str, str]) -> Entry | None:
        try:
            return await self.cache.store.get(primary, headers)
        except Exception:
            self.stats.store_errors += 1
            return None

    def _decide(
        self,
        request: Request,
        state: _State,
        entry: Entry | None,
        reload: bool,
        *,
        waited: bool,
    ) -> Response | Awaitable[Response | None] | None:
        now = time.time()
        if entry is not None:
            if state.label == BYPASS and not self._shareable(entry):
                entry = None
            elif not reload and entry.fresh(now):
                self.stats.hits += 1
                return self._answer(request, entry, now, HIT)
        if request.method == "GET" and "Range" in request.headers:
            # Partial content comes from a fresh entry only; else the backend answers
            # the range, and nothing of it is stored.
            self._pass(request, state.label)
            return None
        state.entry = entry
        inflight = self.cache.inflight.get(state.primary)
        if (
            entry is not None
            and inflight is None
            and not reload
            and state.label != BYPASS
            and self._may_serve_stale(entry, now)
            and self._revalidate_in_background(request, state, entry)
        ):
            # RFC 5861: answer now from the stale entry; a background request refreshes it.
            self.stats.stale += 1
            return self._answer(request, entry, now, STALE)
        if (
            entry is not None
            and inflight is not None
            and not reload
            and self._may_serve_stale(entry, now)
        ):
            # Someone is revalidating it: serve it stale meanwhile.
            self.stats.stale += 1
            return self._answer(request, entry, now, STALE)
        if inflight is not None and not waited and state.label != BYPASS:
            return self._wait(request, state, inflight, reload)
        if inflight is None and state.label != BYPASS and request.method == "GET":
            state.leader = True
            self.cache.inflight[state.primary] = asyncio.get_running_loop().create_future()
        if entry is not None:
            state.revalidating = entry.etag is not None or entry.last_modified is not None
        if state.label == BYPASS:
            self.stats.bypass += 1
        else:
            self.stats.misses += 1
        return None

    async def _wait(
        self, request: Request, state: _State, inflight: asyncio.Future[None], reload: bool
    ) -> Response | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(inflight), self.config.lock_timeout_s)
        entry = await self._get(state.primary, request.headers)
        if entry is not None and entry.fresh(time.time()):
            reload = False  # the response the first request got is as new as it gets
        answer = self._decide(request, state, entry, reload, waited=True)
        if answer is None or isinstance(answer, Response):
            return answer
        return await answer

    @staticmethod
    def _may_serve_stale(entry: Entry, now: float) -> bool:
        """Within ``stale-while-revalidate``, and not an entry that must be revalidated
        before any use (``no-cache``, ``must-revalidate``, ``s-maxage``)?"""
        return (
            not entry.no_cache
            and not entry.must_revalidate
            and entry.stale_for(now) <= entry.stale_while_revalidate
        )

    def _revalidate_in_background(self, request: Request, state: _State, entry: Entry) -> bool:
        """Start the background revalidation of ``entry``, holding its key meanwhile
        (concurrent requests get the stale entry too); False when it cannot start (the
        process runs its maximum of them, or the request was not proxied)."""
        mine = _State(state.primary, state.label)
        mine.entry = entry
        mine.revalidating = entry.etag is not None or entry.last_modified is not None
        view = request.replay({**request.state, "cache": mine})
        if view is None:
            return False
        done = asyncio.get_running_loop().create_future()
        if self.cache.revalidate(self._refresh(view, mine, done)) is None:
            return False
        self.cache.inflight[state.primary] = done
        self.stats.revalidations += 1
        return True

    async def _refresh(self, view: Replayed, state: _State, done: asyncio.Future[None]) -> None:
        """The background revalidation: a 304 refreshes the entry, a storable answer
        replaces it; an answer that may not be stored (or is too large) removes it, as
        the stale copy no longer stands for the resource; an error (a 5xx, no backend)
        leaves it as it is."""
        primary = state.primary
        entry = state.entry
        assert entry is not None
        try:
            fetched = await view.fetch(self.config.max_object_bytes)
            if fetched is None:
                return
            now = time.time()
            stored: Entry | None = None
            if fetched.status == 304:
                if not state.revalidating:  # a 304 to a request without validators
                    self.stats.revalidation_errors += 1
                    return
                stored = self._refreshed_entry(entry, fetched.headers, (), now)
                stored.body = entry.body
            elif fetched.status in _ERRORS:
                self.stats.revalidation_errors += 1
                return
            elif fetched.body is not None:
                head = ResponseHead(
                    fetched.status, fetched.reason, fetched.headers, from_backend=True
                )
                stored = self._storable(view, state, head, now)
                if stored is not None:
                    stored.body = fetched.body
            if stored is None:
                await self._forget(primary)
            elif self._memory is not None:
                self.cache.store.store(primary, view.headers, stored)  # type: ignore[attr-defined]
            else:
                await self._put(primary, view.headers, stored)
        except Exception:
            # No backend, a 502/504, a policy that refused: the stale entry stays (and
            # serves stale-if-error); the next request in the window tries again.
            self.stats.revalidation_errors += 1
        finally:
            if self.cache.inflight.get(primary) is done:
                del self.cache.inflight[primary]
            done.set_result(None)

    def _shareable(self, entry: Entry) -> bool:
        """May ``entry`` answer a request with credentials (``public``, ``s-maxage``)?"""
        return entry.public

    def _answer(self, request: Request, entry: Entry, now: float, label: str) -> Response:
        age = str(int(entry.age(now)))
        headers_in = request.headers
        if not_modified(headers_in, entry.etag, entry.last_modified):
            headers = [(n, v) for n, v in entry.headers if n.lower() not in _KEPT_ON_304]
            return Response(304, b"", [*headers, ("Age", age), ("X-Cache", label)])
        if "Range" in headers_in and entry.status == 200 and request.method == "GET":
            ranged = self._partial(headers_in, entry, age, label)
            if ranged is not None:
                return ranged
        return Response(
            entry.status, entry.body, [*entry.headers, ("Age", age), ("X-Cache", label)]
        )

    @staticmethod
    def _partial(headers: Mapping[str, str], entry: Entry, age: str, label: str) -> Response | None:
        """The 206 (or 416) a single byte range of ``entry`` makes (RFC 9110 14), or
        None to send the whole response (several ranges, a malformed header, an
        ``If-Range`` that no longer names the entry)."""
        if_range = headers.get("If-Range")
        if if_range is not None and not if_range_matches(if_range, entry.etag, entry.last_modified):
            return None
        body = entry.body
        length = len(body)
        wanted = byte_range(headers.get("Range", ""), length)
        if wanted is None:
            return None
        if wanted == UNSATISFIABLE:
            return Response(
                416,
                b"",
                [
                    ("Content-Range", f"bytes */{length}"),
                    ("Accept-Ranges", "bytes"),
                    ("X-Cache", label),
                ],
            )
        first, last = wanted
        return Response(
            206,
            body[first : last + 1],
            [
                *entry.headers,
                ("Content-Range", f"bytes {first}-{last}/{length}"),
                ("Age", age),
                ("X-Cache", label),
            ],
        )

    def _bypass(self, request: Request) -> None:
        self.stats.bypass += 1
        request.state["cache"] = _State("", BYPASS)

    def _pass(self, request: Request, label: str) -> None:
        """Send the request to the backend without coalescing, revalidating or storing."""
        if label == BYPASS:
            self.stats.bypass += 1
        else:
            self.stats.misses += 1
        request.state["cache"] = _State("", label)

    # -- before_upstream -----------------------------------------------------------

    def before_upstream(self, request: Request, upstream: UpstreamRequest) -> None:
        state = request.state.get("cache")
        if state is None or not state.revalidating or state.entry is None:
            return
        entry = state.entry
        headers = [(n, v) for n, v in upstream.headers if n.lower() not in _CONDITIONALS]
        if entry.etag is not None:
            headers.append(("If-None-Match", entry.etag))
        if entry.last_modified is not None:
            headers.append(("If-Modified-Since", entry.last_modified))
        upstream.headers = headers

    # -- on_response ---------------------------------------------------------------

    def on_response(self, request: Request, response: ResponseHead) -> None:
        state = request.state.get("cache")
        if state is None or not state.primary:
            if state is not None:
                response.headers.append(("X-Cache", state.label))
            return
        entry = state.entry
        now = time.time()
        if not response.from_backend:
            # An early answer (a hit, a refusal), or the gateway's own 502/503/504.
            if response.status in _ERRORS and entry is not None and self._stale_ok(entry, now):
                self._serve_stale(request, state, response, entry, now)
            return
        if response.status == 304 and state.revalidating and entry is not None:
            self._refreshed(request, state, response, entry, now)
            return
        if response.status in _ERRORS and entry is not None and self._stale_ok(entry, now):
            self._serve_stale(request, state, response, entry, now)
            return
        if request.method == "GET":
            state.meta = self._storable(request, state, response, now)
            if state.meta is not None:
                state.capture = []
                length = _get(response.headers, "content-length")
                state.size = int(length[0]) if length and length[0].isdigit() else None
                if state.size is not None and state.size > self.config.max_object_bytes:
                    state.meta = state.capture = None
        response.headers.append(("X-Cache", state.label))

    def _stale_ok(self, entry: Entry, now: float) -> bool:
        return not entry.must_revalidate and entry.stale_for(now) <= entry.stale_if_error

    def _serve_stale(
        self, request: Request, state: _State, response: ResponseHead, entry: Entry, now: float
    ) -> None:
        self.stats.stale += 1
        response.status = entry.status
        response.reason = reason_phrase(entry.status)
        response.headers = [
            *entry.headers,
            ("Age", str(int(entry.age(now)))),
            ("X-Cache", STALE),
        ]
        if response.from_backend:  # else the gateway counts the body it sends
            response.headers.append(("Content-Length", str(len(entry.body))))
        state.answer = b"" if request.method == "HEAD" else entry.body
        response.body = state.answer

    def _refreshed(
        self, request: Request, state: _State, response: ResponseHead, entry: Entry, now: float
    ) -> None:
        """The backend says the stored response is still good: update and serve it."""
        fresh = self._refreshed_entry(entry, response.headers, request.response_headers, now)
        headers = fresh.headers
        state.meta = fresh
        state.capture = [entry.body]
        state.captured = len(entry.body)
        state.size = None
        state.ended = True
        self.stats.hits += 1
        state.label = HIT
        if not_modified(request.headers, fresh.etag, fresh.last_modified):
            response.headers = [*headers, ("X-Cache", HIT)]
            state.answer = b""
            return
        response.status = fresh.status
        response.reason = reason_phrase(fresh.status)
        response.headers = [
            *headers,
            ("Content-Length", str(len(fresh.body))),
            ("X-Cache", HIT),
        ]
        state.answer = b"" if request.method == "HEAD" else fresh.body

    def _refreshed_entry(
        self,
        entry: Entry,
        received: list[tuple[str, str]],
        mine: Iterable[tuple[str, str]],
        now: float,
    ) -> Entry:
        """``entry`` updated by the headers of a 304 (RFC 9111 4.3.4; ``mine``: headers
        policies added for this exchange, not stored), fresh again from ``now``."""
        updates = {n.lower() for n, _ in received if n.lower() not in _KEPT_ON_304} - _NOT_STORED
        added = set(mine)
        headers = [(n, v) for n, v in entry.headers if n.lower() not in updates]
        headers += [(n, v) for n, v in received if n.lower() in updates and (n, v) not in added]
        cc = directives(_get(headers, "cache-control"))
        ttl = freshness(
            cc,
            next(iter(_get(headers, "expires")), None),
            next(iter(_get(headers, "date")), None),
            now,
            self.config.default_ttl_s,
        )
        return replace(entry, headers=headers, stored_at=now, initial_age=0.0, ttl=float(ttl or 0))

    def _storable(
        self, request: Request, state: _State, response: ResponseHead, now: float
    ) -> Entry | None:
        """The entry ``response`` makes, or None when RFC 9111 (or the settings) say it
        may not be stored."""
        if response.status not in self._statuses or response.status == 206:
            return None  # partial content is never stored, whatever ``statuses`` says
        pairs = response.headers
        cc = directives(_get(pairs, "cache-control"))
        if "no-store" in cc or "private" in cc or _get(pairs, "set-cookie"):
            return None
        public = "public" in cc or "s-maxage" in cc
        if state.label == BYPASS and not (public or "must-revalidate" in cc):
            return None
        vary = vary_names(_get(pairs, "vary"))
        if vary is None:
            return None
        date = next(iter(_get(pairs, "date")), None)
        ttl = freshness(
            cc, next(iter(_get(pairs, "expires")), None), date, now, self.config.default_ttl_s
        )
        etag = next(iter(_get(pairs, "etag")), None)
        last_modified = next(iter(_get(pairs, "last-modified")), None)
        no_cache = "no-cache" in cc
        if ttl is None:
            if not no_cache or (etag is None and last_modified is None):
                return None
            ttl = 0
        # RFC 9111 4.2.3: the larger of its Age and how far its Date lies in the past.
        age = float(seconds(next(iter(_get(pairs, "age")), None)) or 0)
        sent = parse_date(date)
        if sent is not None:
            age = max(age, now - sent)
        mine = list(request.response_headers)
        stored: list[tuple[str, str]] = []
        for pair in pairs:
            if pair in mine:
                mine.remove(pair)  # a policy's, for this exchange only
                continue
            if pair[0].lower() not in _NOT_STORED:
                stored.append(pair)
        if response.status == 200:
            # Ranges of a stored 200 are served from the cache, whatever the backend does.
            stored = [p for p in stored if p[0].lower() != "accept-ranges"]
            stored.append(("Accept-Ranges", "bytes"))
        tags = tuple(
            tag
            for value in _get(pairs, self._tag_header)
            for tag in value.replace(",", " ").split()
        )
        entry = Entry(
            status=response.status,
            headers=stored,
            body=b"",
            stored_at=now,
            initial_age=age,
            ttl=float(ttl),
            stale_while_revalidate=float(seconds(cc.get("stale-while-revalidate")) or 0),
            stale_if_error=float(seconds(cc.get("stale-if-error")) or 0),
            no_cache=no_cache,
            must_revalidate="must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc,
            etag=etag,
            last_modified=last_modified,
            tags=tags,
            route="" if request.route is None else request.route.template,
            vary=vary,
            public=public,
        )
        return entry

    # -- on_chunk / on_complete ----------------------------------------------------

    def on_chunk(self, request: Request, chunk: bytes) -> bytes:
        state: _State | None = request.state.get("cache")
        if state is None:
            return chunk
        answer = state.answer
        if answer is not None:
            if not chunk and answer:
                state.answer = b""
                return answer
            return b""
        capture = state.capture
        if capture is not None:
            state.ended = not chunk
            if chunk:
                state.captured += len(chunk)
                if state.captured > self.config.max_object_bytes:
                    state.capture = state.meta = None
                else:
                    capture.append(chunk)
        return chunk

    def on_complete(self, request: Request) -> None:
        state = request.state.get("cache")
        if state is None:
            if request.method in _UNSAFE and 200 <= request.status < 400:
                self._invalidate(request)
            return
        meta = state.meta
        stored: Coroutine[Any, Any, None] | None = None
        if (
            meta is not None
            and state.capture is not None
            and state.ended
            and (state.size is None or state.size == state.captured)
            and request.status in (meta.status, 304)
        ):
            meta.body = b"".join(state.capture)
            if self._memory is not None:
                self.cache.store.store(state.primary, request.headers, meta)  # type: ignore[attr-defined]
            else:
                stored = self._put(state.primary, request.headers, meta)
        if state.leader:
            future = self.cache.inflight.pop(state.primary, None)
            if future is not None:
                if stored is None:
                    future.set_result(None)
                else:
                    task = self.cache.background(stored)
                    task.add_done_callback(lambda _t: future.set_result(None))
                    return
        if stored is not None:
            self.cache.background(stored)

    async def _forget(self, primary: str) -> None:
        what = Purge(key=primary)
        try:
            await self.cache.store.purge(what)
        except Exception:
            self.stats.store_errors += 1

    async def _put(self, primary: str, headers: Mapping[str, str], entry: Entry) -> None:
        try:
            await self.cache.store.put(primary, headers, entry)
        except Exception:
            self.stats.store_errors += 1

    def _invalidate(self, request: Request) -> None:
        """A successful unsafe request invalidates what is stored for its URI
        (RFC 9111 4.4)."""

        what = Purge(key=self.primary_key(request))
        if self._memory is not None:
            self.cache.store.remove(what)  # type: ignore[attr-defined]
            return

        async def purge() -> None:
            try:
                await self.cache.store.purge(what)
            except Exception:
                self.stats.store_errors += 1

        self.cache.background(purge())


def cache_policy(config: CacheConfig) -> CachePolicy:
    return CachePolicy(config)
