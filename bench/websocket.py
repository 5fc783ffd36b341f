"""WebSocket section: 1,000 concurrent WebSocket connections echoing, through the
gateway against straight to the backend.

    uv run python bench/run.py --only websocket [--duration 10] [--quick]
    uv run python bench/websocket.py [--duration 10] [--connections 1000] [--rounds 3]

Three processes, each on uvloop: an aiohttp WebSocket echo backend, one gateway (one
route with ``websocket: true``, access log on), and an aiohttp client. The client
opens every connection first (50 handshakes at a time), then each connection sends a
64-byte text message, waits for its echo and sends the next, for a warm-up and then
``--duration`` seconds measured: messages/s (echoes received in the window), p50 and
p99 round trip (send to echo received), errors (failed handshakes, dropped
connections, wrong echoes, failed closes). Rounds alternate direct and gateway, so
drift in the machine's speed hits both alike; the verdict takes the median round.

Target: 0 errors through the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from procs import BenchError, Child, log, port_open, process_cpu_s, rss_kib, system_busy_s

BENCH_DIR = Path(__file__).resolve().parent
CONNECTIONS = 1000
PAYLOAD = "x" * 64
HANDSHAKES_AT_ONCE = 50
CLIENT_TIMEOUT_S = 120


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# -- the echo backend (a process of its own) ------------------------------------------


def serve_echo(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/echo", echo)
    _raise_fd_limit()
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    web.run_app(
        app, host="127.0.0.1", port=port, backlog=4096, access_log=None, print=None, loop=loop
    )


# -- the client (a process of its own) ---------------------------------------------------


@dataclass
class ClientResult:
    connections: int
    duration_s: float
    messages: int
    msgs_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    connect_s: float
    #: The client process's own CPU seconds (user + system), whole run.
    cpu_s: float = 0.0
    #: Echoes received in the whole run, warm-up included.
    total_messages: int = 0


async def _client(url: str, connections: int, warmup_s: float, duration_s: float) -> ClientResult:
    import aiohttp

    errors = 0
    total = 0
    rtts: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        started = time.perf_counter()
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

        async def connect() -> None:
            nonlocal errors
            async with gate:
                try:
                    sockets.append(await session.ws_connect(url, autoping=False, timeout=30))
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1

        await asyncio.gather(*(connect() for _ in range(connections)))
        connect_s = time.perf_counter() - started
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup_s
        stop_at = measure_from + duration_s

        async def talk(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal errors, total
            try:
                while (now := loop.time()) < stop_at:
                    sent = time.perf_counter()
                    await ws.send_str(PAYLOAD)
                    msg = await ws.receive(timeout=30)
                    if msg.type != aiohttp.WSMsgType.TEXT or msg.data != PAYLOAD:
                        errors += 1
                        return
                    total += 1
                    if now >= measure_from:
                        rtts.append(time.perf_counter() - sent)
            except (aiohttp.ClientError, OSError, TimeoutError):
                errors += 1

        await asyncio.gather(*(talk(ws) for ws in sockets))

        async def close(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal errors
            try:
                await ws.close()
            except (aiohttp.ClientError, OSError, TimeoutError):
                errors += 1

        await asyncio.gather(*(close(ws) for ws in sockets))
    rtts.sort()

    def pct(p: float) -> float:
        return rtts[min(len(rtts) - 1, int(len(rtts) * p))] * 1000 if rtts else 0.0

    return ClientResult(
        connections=len(sockets),
        duration_s=duration_s,
        messages=len(rtts),
        msgs_per_s=len(rtts) / duration_s,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
        errors=errors,
        connect_s=connect_s,
        cpu_s=_own_cpu_s(),
        total_messages=total,
    )


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_client(url: str, connections: int, warmup_s: float, duration_s: float) -> None:
    _raise_fd_limit()
    loop = _new_loop()
    try:
        result = loop.run_until_complete(_client(url, connections, warmup_s, duration_s))
    finally:
        loop.close()
    print(json.dumps(asdict(result)))


# -- the section -------------------------------------------------------------------------


@dataclass
class Row:
    target: str
    round: int
    result: ClientResult
    rss_mb: float
    #: CPU seconds during the row: the gateway's (0 for direct rows), and everything
    #: else on the machine that is not this benchmark (other work: noise).
    gateway_cpu_s: float
    other_cpu_s: float


def _self(*args: str) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "websocket.py"), *args]


def _measure(
    workdir: Path, name: str, url: str, connections: int, warmup_s: float, duration_s: float
) -> ClientResult:
    child = Child(
        name,
        _self(
            "--client",
            url,
            "--connections",
            str(connections),
            "--warmup",
            str(warmup_s),
            "--duration",
            str(duration_s),
        ),
        workdir,
    )
    try:
        code = child.proc.wait(timeout=CLIENT_TIMEOUT_S + duration_s)
    except Exception:
        child.stop()
        raise
    if code != 0:
        raise BenchError(f"{name} exited with {code}; stderr tail:\n{child.stderr_tail()}")
    data = json.loads(child.stdout_path.read_text().strip().splitlines()[-1])
    return ClientResult(**data)


def _sample_rss(pid: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.wait(0.25):
        value = rss_kib(pid)
        if value is not None:
            out.append(value)


def _cpu(gateway_pid: int, backend_pid: int) -> tuple[float, float, float]:
    """(machine busy, gateway, backend) CPU seconds so far."""
    return (
        system_busy_s() or 0.0,
        process_cpu_s(gateway_pid) or 0.0,
        process_cpu_s(backend_pid) or 0.0,
    )


def _gateway_config(port: int) -> dict[str, object]:
    return {
        "version": 1,
        "routers": [
            {
                "external_path": "/ws",
                "internal_path": "/echo",
                "methods": ["GET"],
                "backends": [{"host": "http://127.0.0.1", "port": port}],
                "websocket": True,
            }
        ],
    }


def bench(
    workdir: Path, connections: int, rounds: int, warmup_s: float, duration_s: float
) -> list[Row]:
    from procs import free_port
    from targets import Gateway

    port = free_port()
    backend = Child("ws-echo", _self("--serve-echo", str(port)), workdir)
    gateway: Gateway | None = None
    rows: list[Row] = []
    try:
        backend.wait_until(lambda: port_open(port), 15, "listening")
        gateway = Gateway(workdir, _gateway_config(port), name="gateway-ws")
        targets = {
            "direct": f"ws://127.0.0.1:{port}/echo",
            "gateway": f"ws://127.0.0.1:{gateway.port}/ws",
        }
        for i in range(1, rounds + 1):
            for target, url in targets.items():
                log(f"websocket round {i}: {target}, {connections} connections, {duration_s:g}s")
                samples: list[int] = []
                stop = threading.Event()
                sampler = threading.Thread(
                    target=_sample_rss, args=(gateway.pid, stop, samples), daemon=True
                )
                sampler.start()
                before = _cpu(gateway.pid, backend.pid)
                try:
                    result = _measure(
                        workdir, f"ws-client-{target}-{i}", url, connections, warmup_s, duration_s
                    )
                finally:
                    stop.set()
                    sampler.join(timeout=5)
                busy, gateway_cpu, backend_cpu = (
                    b - a for a, b in zip(before, _cpu(gateway.pid, backend.pid), strict=True)
                )
                row = Row(
                    target,
                    i,
                    result,
                    max(samples, default=0) / 1024,
                    gateway_cpu if target == "gateway" else 0.0,
                    busy - gateway_cpu - backend_cpu - result.cpu_s,
                )
                rows.append(row)
                log(
                    f"  {result.msgs_per_s:,.0f} msg/s  p50 {result.p50_ms:.1f} ms  "
                    f"p99 {result.p99_ms:.1f} ms  errors {result.errors}  "
                    f"({result.connections} open, handshakes {result.connect_s:.1f}s; CPU s: "
                    f"gateway {row.gateway_cpu_s:.1f}, other work {row.other_cpu_s:.1f})"
                )
    finally:
        if gateway is not None:
            gateway.stop()
        backend.stop()
    return rows


def render(rows: list[Row], connections: int, duration_s: float) -> str:
    out = [
        f"\nWebSocket section ({connections:,} connections echoing 64-byte messages, "
        f"{duration_s:g}s per row)",
        "| target | round | open | msg/s | p50 ms | p99 ms | errors | gateway RSS MB "
        "| gateway CPU s | gateway CPU µs/msg | other work CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        res = r.result
        gw = r.target == "gateway"
        rss = f"{r.rss_mb:.0f}" if gw else ""
        cpu = f"{r.gateway_cpu_s:.1f}" if gw else ""
        per = (
            f"{r.gateway_cpu_s / res.total_messages * 1e6:.0f}" if gw and res.total_messages else ""
        )
        out.append(
            f"| {r.target} | {r.round} | {res.connections:,} | {res.msgs_per_s:,.0f} | "
            f"{res.p50_ms:.1f} | {res.p99_ms:.1f} | {res.errors} | {rss} | {cpu} | {per} | "
            f"{r.other_cpu_s:.1f} |"
        )
    direct = [r.result for r in rows if r.target == "direct"]
    via = [r.result for r in rows if r.target == "gateway"]
    if direct and via:
        pairs = list(zip(via, direct, strict=True))
        ratio = statistics.median(g.msgs_per_s / d.msgs_per_s for g, d in pairs)
        added = statistics.median(g.p99_ms - d.p99_ms for g, d in pairs)
        errors = sum(g.errors for g in via)
        complete = all(g.connections == connections for g in via)
        verdict = "PASS" if errors == 0 and complete else "MISS"
        out.append(
            f"gateway / direct msg/s (median of rounds): {ratio:.2f}x; p99 added: "
            f"{added:+.1f} ms; gateway errors: {errors} (target 0) {verdict}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--serve-echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return 0
    if args.client:
        run_client(args.client, args.connections, args.warmup, args.duration)
        return 0
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-ws-"))
    try:
        rows = bench(workdir, args.connections, args.rounds, args.warmup, args.duration)
    except BenchError as exc:
        print(f"websocket bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    print(render(rows, args.connections, args.duration))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
