"""Upload section: large request bodies through one gateway process, and its memory.

    uv run python bench/run.py --only upload [--baseline REF]
    uv run python bench/upload.py [--baseline REF] [--size-mib 1024] [--concurrent 30]

A sink backend (this file, ``--sink PORT``: reads each body to the end, answers with
its length) behind one gateway route with ``max_body_size`` at its 1 GiB ceiling. Two
loads, each on a freshly started gateway: one upload of ``--size-mib`` MiB, then
``--concurrent`` uploads of 10 MiB at once. For each: the gateway's RSS before and its
peak during the load (sampled every 50 ms), the throughput, and whether every upload
was answered 200 with the right length. With ``--baseline REF`` the same loads run on
the code of a git ref (a `git worktree`), on the same backend.

Targets: the 1 GiB upload grows RSS by <= 32 MB; 30 x 10 MiB by <= 64 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chain import baseline_tree, drop_tree, source_path
from procs import BenchError, Child, free_port, log, port_open, rss_kib
from targets import Gateway

MIB = 1024 * 1024
CHUNK = 256 * 1024
TARGET_ONE_MB = 32
TARGET_MANY_MB = 64
SAMPLE_S = 0.05


# -- the sink backend (runs as its own process) -----------------------------------------


async def _sink_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
            got = 0
            if chunked:
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    await reader.readexactly(size + 2)
                    got += size
                await reader.readuntil(b"\r\n")
            else:
                while got < length:
                    data = await reader.read(min(length - got, 1 * MIB))
                    if not data:
                        return
                    got += len(data)
            answer = b'{"length": %d}' % got
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _serve_sink(port: int) -> None:
    server = await asyncio.start_server(_sink_connection, "127.0.0.1", port, limit=1 * MIB)
    async with server:
        await server.serve_forever()


# -- the client -------------------------------------------------------------------------


async def _upload(port: int, size: int) -> bool:
    """POST ``size`` bytes to /up; True when answered 200 with the right length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /up HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" % (port, size)
        )
        block = bytes(CHUNK)
        sent = 0
        while sent < size:
            piece = block if size - sent >= CHUNK else block[: size - sent]
            writer.write(piece)
            sent += len(piece)
            await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200") and json.loads(body).get("length") == size
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return False
    finally:
        writer.close()


async def _uploads(port: int, count: int, size: int) -> int:
    results = await asyncio.gather(*(_upload(port, size) for _ in range(count)))
    return sum(results)


# -- measuring --------------------------------------------------------------------------


@dataclass
class Row:
    side: str
    load: str
    ok: int
    total: int
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float

    @property
    def growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb

    @property
    def mb_per_s(self) -> float:
        return 0.0 if self.seconds <= 0 else self.mbytes / self.seconds

    mbytes: float = 0.0


def _sample(pid: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.wait(SAMPLE_S):
        value = rss_kib(pid)
        if value is not None:
            out.append(value)


def _config(port: int) -> dict[str, object]:
    return {
        "version": 1,
        "max_body_size": 1 << 30,
        "routers": [
            {
                "external_path": "/up",
                "internal_path": "/sink",
                "methods": ["POST"],
                "backends": [{"host": "http://127.0.0.1", "port": port}],
                "timeouts": {"read_ms": 120000},
            }
        ],
    }


def measure(
    side: str, workdir: Path, sink_port: int, env: dict[str, str], load: str, count: int, size: int
) -> Row:
    gateway = Gateway(workdir, _config(sink_port), name=f"gw-{side}-{load}", env=env)
    try:
        # One small upload first, so the baseline RSS includes a warmed-up request path.
        if not asyncio.run(_uploads(gateway.port, 1, 1 * MIB)):
            raise BenchError(f"{side}: a 1 MiB warm-up upload failed")
        time.sleep(0.5)
        before = rss_kib(gateway.pid) or 0
        samples: list[int] = [before]
        stop = threading.Event()
        sampler = threading.Thread(target=_sample, args=(gateway.pid, stop, samples))
        sampler.start()
        started = time.perf_counter()
        try:
            ok = asyncio.run(_uploads(gateway.port, count, size))
        finally:
            elapsed = time.perf_counter() - started
            stop.set()
            sampler.join(timeout=5)
    finally:
        gateway.stop()
    row = Row(
        side, load, ok, count, elapsed, before / 1024, max(samples) / 1024, count * size / MIB
    )
    log(
        f"  {side} {load}: {ok}/{count} ok in {elapsed:.1f}s ({row.mb_per_s:,.0f} MiB/s), "
        f"RSS {row.rss_before_mb:.0f} -> peak {row.rss_peak_mb:.0f} MB "
        f"(+{row.growth_mb:.0f} MB)"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help="git ref to measure side by side")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--concurrent", type=int, default=30)
    args = parser.parse_args(argv)
    if args.sink:
        asyncio.run(_serve_sink(args.sink))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-upload-"))
    sink: Child | None = None
    tree: Path | None = None
    rows: list[Row] = []
    size = min(args.size_mib * MIB, 1 << 30)
    try:
        sink_port = free_port()
        sink = Child("sink", [sys.executable, __file__, "--sink", str(sink_port)], workdir)
        sink.wait_until(lambda: port_open(sink_port), 10, "listening")
        sides: dict[str, dict[str, str]] = {}
        if args.baseline:
            tree = baseline_tree(args.baseline, workdir)
            sides["before"] = {"PYTHONPATH": source_path(tree)}
        sides["after"] = {}
        loads = [
            (f"1 x {size // MIB} MiB", 1, size),
            (f"{args.concurrent} x 10 MiB", args.concurrent, 10 * MIB),
        ]
        for load, count, each in loads:
            for side, env in sides.items():
                rows.append(measure(side, workdir, sink_port, env, load, count, each))
    except BenchError as exc:
        print(f"upload bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        if sink is not None:
            sink.stop()
        if tree is not None:
            drop_tree(tree)
    print("\nUpload section (one gateway process per row, RSS sampled every 50 ms)")
    print("| side | load | ok | MiB/s | RSS before MB | RSS peak MB | growth MB | target |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        target = TARGET_ONE_MB if r.total == 1 else TARGET_MANY_MB
        verdict = "PASS" if r.growth_mb <= target and r.ok == r.total else "MISS"
        print(
            f"| {r.side} | {r.load} | {r.ok}/{r.total} | {r.mb_per_s:,.0f} | "
            f"{r.rss_before_mb:.0f} | {r.rss_peak_mb:.0f} | {r.growth_mb:.0f} | "
            f"<= {target} MB {verdict} |"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
