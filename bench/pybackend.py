"""Fallback benchmark backend when nginx is not installed: a minimal HTTP/1.1 server.

Answers every request with a fixed small `200` and keeps the connection open (unless the
client sends `Connection: close`). Counts accepted connections and requests;
`GET /__bench_stats` returns them as JSON (the same role as nginx's `stub_status`).
No request bodies: benchmark traffic is `GET` only.

`--delay-ms N` makes it a slow backend: every answer is written N ms after its request
arrived (`loop.call_later`, nothing blocks, so many requests wait at once). Answers on
one connection keep their order. `/__bench_stats` is answered at once when nothing is
waiting on its connection.

    uv run python bench/pybackend.py --port 8081 [--delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import deque
from typing import cast

STATS_PATH = b"/__bench_stats"
_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


class Counters:
    def __init__(self) -> None:
        self.accepts = 0
        self.requests = 0


class BenchProtocol(asyncio.Protocol):
    def __init__(self, counters: Counters, delay_s: float = 0.0) -> None:
        self._counters = counters
        self._delay_s = delay_s
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        # Delayed answers in request order; each timer writes the oldest one, so the
        # order holds even if two timers with the same deadline fire swapped.
        # A timer that fires after the connection is gone finds no transport and returns.
        self._pending: deque[tuple[bytes, bool]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance check.
        self._transport = cast(asyncio.Transport, transport)
        self._counters.accepts += 1

    def _stats_body(self) -> bytes:
        body = json.dumps(
            {"accepts": self._counters.accepts, "requests": self._counters.requests}
        ).encode()
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._buffer += data
        out: list[bytes] = []
        close = False
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end]
            self._buffer = self._buffer[end + 4 :]
            self._counters.requests += 1
            target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            is_stats = target == STATS_PATH
            answer = self._stats_body() if is_stats else _RESPONSE
            close = b"\r\nconnection: close" in head.lower()
            if self._delay_s > 0 and not (is_stats and not self._pending):
                self._delay(answer, close)
            else:
                out.append(answer)
            if close:
                break
        if out:
            transport.write(b"".join(out))
        if (close and not self._pending) or len(self._buffer) > 65536:
            transport.close()

    def _delay(self, answer: bytes, close: bool) -> None:
        self._pending.append((answer, close))
        asyncio.get_running_loop().call_later(self._delay_s, self._flush_one)

    def _flush_one(self) -> None:
        transport = self._transport
        if transport is None or not self._pending:
            return
        answer, close = self._pending.popleft()
        transport.write(answer)
        if close:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._pending.clear()


async def serve(host: str, port: int, delay_ms: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters()
    delay_s = delay_ms / 1000.0
    server = await loop.create_server(
        lambda: BenchProtocol(counters, delay_s), host, port, reuse_address=True, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    delay = f" (answers delayed {delay_ms:g} ms)" if delay_ms > 0 else ""
    print(f"pybackend listening on http://{host}:{port}{delay}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="answer each request this much later (0)"
    )
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms must be >= 0")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port, args.delay_ms))
    else:
        uvloop.run(serve(args.host, args.port, args.delay_ms))


if __name__ == "__main__":
    main()
