"""A real gateway and a real backend on their own thread and event loop, for the
browser tests (whose test body is synchronous while Selenium drives Chromium)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kairos_core import load_config_file
from kairos_gateway import AccessLog, Gateway, GatewaySettings
from tornado.testing import bind_unused_port

from tests.support import EchoBackend, route

START_TIMEOUT_S = 15


class LiveStack:
    """``with LiveStack(tmp_path) as stack:`` a gateway (``stack.url``) from a config file
    with one route ``/echo/{*rest}`` to an echo backend (``stack.backend``),
    ``extra_routes(backend)`` after it when given, and the ``admin`` section given
    (tokens, say)."""

    def __init__(
        self,
        directory: Path,
        extra_routes: Callable[[EchoBackend], list[dict[str, Any]]] | None = None,
        admin: dict[str, Any] | None = None,
    ) -> None:
        self.config = directory / "config.json"
        self.extra_routes = extra_routes
        self.admin = admin
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="live-gateway", daemon=True)
        self.backend = EchoBackend(name="live")
        self.gateway: Gateway | None = None
        self.port = 0
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        await self.backend.start()
        routers = [route("/echo/{*rest}", "/{*rest}", [self.backend])]
        if self.extra_routes is not None:
            routers += self.extra_routes(self.backend)
        config: dict[str, Any] = {"version": 1, "routers": routers}
        if self.admin is not None:
            config["admin"] = self.admin
        self.config.write_text(json.dumps(config, indent=2))
        self.gateway = Gateway(
            load_config_file(self.config),
            GatewaySettings(),
            source=self.config,
            access_log=AccessLog(io.BytesIO(), "json"),
        )
        sock, self.port = bind_unused_port()
        await self.gateway.start([sock])

    async def _stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop(drain_timeout_s=1)
        self.backend.release.set()
        await self.backend.stop()

    def __enter__(self) -> LiveStack:
        self.thread.start()
        assert self._started.wait(START_TIMEOUT_S), "the gateway did not start in time"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(START_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT_S)
        self.loop.close()

    def get(self, path: str) -> tuple[int, Any]:
        """GET ``path`` through the gateway: (status, JSON body or None)."""
        request = urllib.request.Request(self.url + path)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None
