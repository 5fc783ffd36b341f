"""`JwksKeys`: the signing keys published at a JWKS URL, fetched and cached off the hot path.

Lookups (`lookup`) are synchronous dict reads. Fetches run as asyncio tasks on an
aiohttp session; a request never waits for one unless its token names a key we do not
have. The rules:

* A fetched set is fresh for ``ttl_s``, or less when the response's ``Cache-Control``
  says so (``max-age``; ``no-cache``/``no-store`` count as ``max-age=0``), but never less
  than ``min_gap_s`` (``max(refresh_interval_s, 1 s)``), so an IdP that forbids caching
  cannot make every request a fetch. A stale set keeps serving while a background
  fetch replaces it (`refresh_if_stale`).
* An unknown ``kid`` may start a fetch only when none ran in the last
  ``refresh_interval_s`` (`refresh_for_unknown_kid`); while one runs, every caller
  shares it. So a flood of bogus kids costs the IdP at most one request per interval.
* A failed fetch (network, timeout, HTTP status, bad JSON, no usable key) keeps the
  last good keys; the first failure of a streak logs a warning, recovery logs info.
* Keys are parsed with pyjwt's `PyJWK`, one object per (key, algorithm) the key type
  allows (`keys.jwk_algorithms`), restricted to the configured algorithms. Keys below
  pyjwt's minimum strength (e.g. RSA < 2048 bits) are skipped.

aiohttp is imported only when a session is first needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from jwt import PyJWK, PyJWTError

from .keys import jwk_algorithms

if TYPE_CHECKING:
    import aiohttp

__all__ = ["JwksKeys", "SessionFactory", "cache_lifetime"]

log = logging.getLogger("kairos.gateway")

SessionFactory = Callable[[], "aiohttp.ClientSession"]

#: A JWKS document larger than this is refused (real ones are a few KiB).
MAX_JWKS_BYTES = 1 << 20
#: Keys beyond this many in one document are ignored (each kid-less token tries them all).
MAX_JWKS_KEYS = 50
_USER_AGENT = "kairos-gateway-jwks/0.1"


class JwksError(Exception):
    """A JWKS fetch failed; the message is safe to log (no key material)."""


def cache_lifetime(cache_control: str | None, ttl_s: float, min_s: float) -> float:
    """How long a fetched JWKS stays fresh: ``ttl_s``, lowered by ``Cache-Control``."""
    if not cache_control:
        return ttl_s
    max_age: float | None = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-cache", "no-store"):
            max_age = 0.0
        elif name == "max-age":
            with contextlib.suppress(ValueError):
                seconds = float(value.strip().strip('"'))
                if math.isfinite(seconds):
                    max_age = max(0.0, seconds) if max_age is None else min(max_age, seconds)
    if max_age is None:
        return ttl_s
    return min(ttl_s, max(max_age, min_s))


class JwksKeys:
    def __init__(
        self,
        url: str,
        algorithms: Collection[str],
        *,
        ttl_s: float,
        refresh_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float],
        session_factory: SessionFactory | None = None,
        on_keys_removed: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self._algorithms = frozenset(algorithms)
        self._ttl_s = ttl_s
        self._refresh_interval_s = refresh_interval_s
        self._min_gap_s = max(refresh_interval_s, 1.0)
        self._timeout_s = timeout_s
        self._clock = clock
        self._session_factory = session_factory
        self._on_keys_removed = on_keys_removed
        self._session: aiohttp.ClientSession | None = None
        self._by_kid: dict[tuple[str, str], PyJWK] = {}
        self._by_alg: dict[str, list[PyJWK]] = {}
        self._kids: frozenset[str] = frozenset()
        self.loaded = False
        self._fresh_until = -math.inf
        self._last_attempt = -math.inf
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def fetching(self) -> asyncio.Task[None] | None:
        """The fetch running now, if any (pass it to `wait`)."""
        return self._task

    # -- lookups (synchronous, per request) ---------------------------------------------

    def lookup(self, kid: str | None, alg: str) -> list[PyJWK]:
        """Keys that may verify a token with this ``kid`` (None: every key) and ``alg``."""
        if kid is None:
            return self._by_alg.get(alg, [])
        key = self._by_kid.get((kid, alg))
        return [key] if key is not None else []

    def refresh_if_stale(self, now: float) -> None:
        """Start a background fetch when the keys are stale and none ran recently."""
        if (
            now >= self._fresh_until
            and now >= self._last_attempt + self._min_gap_s
            and self._task is None
        ):
            self._start_fetch(now)

    def refresh_for_unknown_kid(self, now: float) -> asyncio.Task[None] | None:
        """The fetch a token with an unknown key may wait for, or None when rate limited."""
        if self._task is not None:
            return self._task
        if now < self._last_attempt + self._refresh_interval_s:
            return None
        return self._start_fetch(now)

    async def wait(self, task: asyncio.Task[None]) -> None:
        """Wait for ``task`` (bounded); a cancelled waiter never cancels the shared fetch."""
        try:
            async with asyncio.timeout(self._timeout_s + 1.0):
                await asyncio.shield(task)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the waiter itself was cancelled
            # else: `close` cancelled the fetch; the caller finds no new keys.

    # -- fetching ------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Fetch now (joining a running fetch) and wait for it; True if keys are loaded."""
        task = self._task or self._start_fetch(self._clock())
        await self.wait(task)
        return self.loaded

    def _start_fetch(self, now: float) -> asyncio.Task[None]:
        self._last_attempt = now
        task = asyncio.get_running_loop().create_task(self._fetch(), name="kairos-jwks-fetch")
        self._task = task
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _fetch(self) -> None:
        import aiohttp

        try:
            async with asyncio.timeout(self._timeout_s):
                body, cache_control = await self._get()
            keys = self._parse(body)
        except (
            aiohttp.ClientError,
            TimeoutError,
            OSError,
            ValueError,
            RecursionError,
            JwksError,
        ) as exc:
            self._failed(exc)
            return
        except Exception as exc:
            # Unforeseen (a bug): keep the keys and the gateway running, but say so loudly.
            log.exception("unexpected error fetching the JWKS from %s", self.url)
            self._failed(exc)
            return
        now = self._clock()
        self._install(keys, now + cache_lifetime(cache_control, self._ttl_s, self._min_gap_s))

    async def _get(self) -> tuple[bytes, str | None]:
        import aiohttp

        if self._session is None:
            factory = self._session_factory or _default_session
            self._session = factory()
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        async with self._session.get(self.url, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise JwksError(f"HTTP {response.status}")
            if (response.content_length or 0) > MAX_JWKS_BYTES:
                raise JwksError("document too large")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksError("document too large")
            return bytes(body), response.headers.get("Cache-Control")

    def _parse(self, body: bytes) -> list[tuple[str | None, str, PyJWK]]:
        document = json.loads(body)
        raw_keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw_keys, list):
            raise JwksError("not a JWK Set (no 'keys' list)")
        keys: list[tuple[str | None, str, PyJWK]] = []
        for raw in raw_keys[:MAX_JWKS_KEYS]:
            if not isinstance(raw, dict):
                continue
            kid = raw.get("kid")
            if kid is not None and not isinstance(kid, str):
                continue
            for alg in sorted(jwk_algorithms(raw) & self._algorithms):
                key = _load_jwk(raw, alg)
                if key is not None:
                    keys.append((kid, alg, key))
        if not keys:
            raise JwksError("no usable signing key for the configured algorithms")
        return keys

    def _install(self, keys: list[tuple[str | None, str, PyJWK]], fresh_until: float) -> None:
        by_kid: dict[tuple[str, str], PyJWK] = {}
        by_alg: dict[str, list[PyJWK]] = {}
        for kid, alg, key in keys:
            if kid is not None:
                by_kid.setdefault((kid, alg), key)
            by_alg.setdefault(alg, []).append(key)
        kids = frozenset(kid for kid, _ in by_kid)
        removed = bool(self._kids - kids)
        self._by_kid, self._by_alg, self._kids = by_kid, by_alg, kids
        self._fresh_until = fresh_until
        self.loaded = True
        if self._failing:
            log.info("JWKS fetch from %s recovered", self.url)
            self._failing = False
        if removed and self._on_keys_removed is not None:
            self._on_keys_removed()

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            kept = "keeping the last good keys" if self.loaded else "no keys yet"
            log.warning(
                "JWKS fetch from %s failed (%s: %s); %s",
                self.url,
                type(exc).__name__,
                exc,
                kept,
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(self._timeout_s + 1.0):
                    await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _load_jwk(raw: Mapping[str, Any], alg: str) -> PyJWK | None:
    try:
        key = PyJWK(dict(raw), algorithm=alg)
    except PyJWTError:
        return None
    if key.Algorithm.check_key_length(key.key) is not None:
        log.warning("JWKS key %r is too weak for %s; ignored", raw.get("kid"), alg)
        return None
    return key


def _default_session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession()
