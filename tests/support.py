"""Real servers and a raw HTTP client for the tests (no mocked HTTP anywhere).

`EchoBackend` is a Tornado application on an unused loopback port that reports what it
received and can answer in the awkward ways a backend may (slow, streamed, cookies,
no body). It counts accepted TCP connections so tests can prove keep-alive reuse.
`raw_request` speaks HTTP/1.1 over a plain socket so tests control every byte sent
(aiohttp's client would normalise dot-segments in paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.netutil import bind_sockets
from tornado.testing import bind_unused_port

LOOPBACK = "127.0.0.1"


async def eventually(
    check: Callable[[], object], timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Wait until ``check()`` is truthy (awaited when it returns an awaitable): the one
    way tests wait for an observable condition, always bounded by ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without KAIROS_* / RUST_LOG, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIROS_", "RUST_LOG"))}
    env.update(extra)
    return env


@asynccontextmanager
async def gateway_process(
    *args: str, cwd: Path, **env: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, list[dict[str, Any]]]]:
    """Run `python -m kairos_gateway` on port 0; yield (process, bound port, log records).

    Log records keep arriving in the list while the block runs (stderr is drained, so a
    chatty gateway never blocks on a full pipe). The process is killed on exit if it is
    still running.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_gateway",
        "--host",
        LOOPBACK,
        "--port",
        "0",
        *args,
        cwd=cwd,
        env=clean_env(KAIROS_LOG_FORMAT="json", KAIROS_ACCESS_LOG="off", **env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # Its own process group, so worker processes (--workers) go down with it.
        start_new_session=True,
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    records: list[dict[str, Any]] = []

    async def drain() -> None:
        while line := await stderr.readline():
            records.append(json.loads(line))

    drainer: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await stderr.readline()
                assert line, f"gateway exited early: {records}"
                records.append(json.loads(line))
                if records[-1]["message"].startswith("listening on"):
                    break
        port = int(records[-1]["port"])
        drainer = asyncio.create_task(drain())
        yield proc, port, records
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if drainer is not None:
            await asyncio.wait_for(drainer, 10)


def unused_port() -> int:
    """A port free right now (for subprocesses that must be told a port up front)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class _CountingServer(HTTPServer):
    accepted = 0

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        self.accepted += 1
        super().handle_stream(stream, address)


class _Echo(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    def initialize(self, backend: EchoBackend) -> None:
        self.backend = backend

    async def _echo(self) -> None:
        req = self.request
        backend = self.backend
        backend.requests.append(req)
        if backend.delay_s:
            await asyncio.sleep(backend.delay_s)
        if backend.status != 200:
            self.set_status(backend.status)
            if backend.retry_after is not None:
                self.set_header("Retry-After", backend.retry_after)
        self.set_header("Content-Type", "application/json")
        self.set_header("X-Backend", self.backend.name)
        self.write(
            json.dumps(
                {
                    "backend": self.backend.name,
                    "method": req.method,
                    "uri": req.uri,
                    "headers": [[k, v] for k, v in req.headers.get_all()],
                    "body": req.body.decode("latin-1"),
                }
            )
        )

    get = post = put = delete = patch = options = _echo

    def head(self) -> None:
        self.set_header("Content-Length", "42")
        self.set_header("X-Backend", self.backend.name)


class _Health(web.RequestHandler):
    def initialize(self, backend: EchoBackend) -> None:
        self.backend = backend

    def get(self) -> None:
        self.backend.probes += 1
        self.set_status(self.backend.health_status)
        self.write("ok" if self.backend.health_status < 400 else "failing")


class _Stream(web.RequestHandler):
    def initialize(self, backend: EchoBackend) -> None:
        self.backend = backend

    async def get(self) -> None:
        self.write("first-chunk;")
        await self.flush()
        await self.backend.release.wait()
        self.write("second-chunk")


class _Slow(web.RequestHandler):
    async def get(self, ms: str) -> None:
        await asyncio.sleep(int(ms) / 1000)
        self.write(f"slept {ms}")


class _Status(web.RequestHandler):
    def get(self, code: str) -> None:
        self.set_status(int(code))
        if int(code) not in (204, 304):
            self.write(f"status {code}")


class _Cookies(web.RequestHandler):
    def get(self) -> None:
        self.add_header("Set-Cookie", "a=1; Path=/")
        self.add_header("Set-Cookie", "b=2; Path=/")
        self.add_header("Set-Cookie", "c=3; Path=/; HttpOnly")
        self.set_header("Connection", "close, X-Hop")
        self.set_header("X-Hop", "secret")
        self.write("cookies")


@dataclass
class EchoBackend:
    name: str = "backend"
    requests: list[Any] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    #: Every echo response waits this long first, and answers with this status.
    delay_s: float = 0.0
    status: int = 200
    retry_after: str | None = None
    #: What /health answers, and how many probes it got.
    health_status: int = 200
    probes: int = 0
    _server: _CountingServer | None = None

    @property
    def accepted(self) -> int:
        return self._server.accepted if self._server else 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self, port: int = 0) -> EchoBackend:
        app = web.Application(
            [
                (r"/stream", _Stream, {"backend": self}),
                (r"/health", _Health, {"backend": self}),
                (r"/slow/(\d+)", _Slow),
                (r"/status/(\d+)", _Status),
                (r"/cookies", _Cookies),
                (r"/.*", _Echo, {"backend": self}),
            ]
        )
        server = _CountingServer(app)
        if port:
            sockets = bind_sockets(port, LOOPBACK)
            self.port = port
        else:
            sock, self.port = bind_unused_port()
            sockets = [sock]
        server.add_sockets(sockets)
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None


class ResettingServer:
    """Accepts TCP connections and closes them at once: a backend that is "up" at the
    TCP level but never answers. Counts accepted connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self) -> ResettingServer:
        async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self._server = await asyncio.start_server(on_connect, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> RawResponse:
    """Read one HTTP/1.1 response (Content-Length, chunked or until close)."""
    block = await reader.readuntil(b"\r\n\r\n")
    lines = block.decode("latin-1").split("\r\n")
    _, status, *reason = lines[0].split(" ", 2)
    headers = [
        (k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:] if line)
    ]
    resp = RawResponse(int(status), reason[0] if reason else "", headers, b"")
    if head or resp.status in (204, 304) or 100 <= resp.status < 200:
        return resp
    length = resp.header("Content-Length")
    if length is not None:
        resp.body = await reader.readexactly(int(length))
    elif (resp.header("Transfer-Encoding") or "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        resp.body = bytes(body)
    else:
        resp.body = await reader.read()
    return resp


async def raw_request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    host: str | None = None,
    timeout: float = 10.0,
) -> RawResponse:
    """Send one request on a fresh connection exactly as given and read the response;
    ``Host`` is ``127.0.0.1:<port>`` unless given."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'{LOOPBACK}:{port}'}"]
            lines += [f"{k}: {v}" for k, v in headers or []]
            if body:
                lines.append(f"Content-Length: {len(body)}")
            lines.append("Connection: close")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            return await read_response(reader, head=method == "HEAD")
        finally:
            writer.close()
            await writer.wait_closed()


def route(
    external: str,
    internal: str,
    backends: list[EchoBackend | ResettingServer | str],
    *,
    backend_extra: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A route dict for a config, with backends given as servers or URLs;
    ``backend_extra`` is merged into every backend (e.g. a health_check_path)."""
    out: list[dict[str, Any]] = []
    for b in backends:
        url = b if isinstance(b, str) else b.url
        scheme_host, port = url.rsplit(":", 1)
        out.append({"host": scheme_host, "port": int(port), **(backend_extra or {})})
    return {
        "external_path": external,
        "internal_path": internal,
        "methods": extra.pop("methods", ["GET", "HEAD", "POST", "PUT", "DELETE"]),
        "backends": out,
        **extra,
    }


async def api_call(
    port: int,
    method: str,
    target: str,
    body: Any = None,
    *,
    headers: list[tuple[str, str]] | None = None,
) -> RawResponse:
    """A management API call: ``body`` (when given) sent as JSON."""
    sent = [] if body is None else [("Content-Type", "application/json")]
    data = b"" if body is None else json.dumps(body).encode()
    return await raw_request(
        port, target, method=method, body=data, headers=[*sent, *(headers or [])]
    )


def non_loopback_address() -> str | None:
    """This machine's own non-loopback IPv4 address, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address
