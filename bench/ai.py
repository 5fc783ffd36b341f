"""AI section: what the ``ai`` plugin adds to an LLM call, against the provider directly.

    uv run python bench/ai.py [--duration 8] [--rounds 3] [--delay-ms 20]

Three processes: the fake provider (examples/fake_llm.py, a fixed ``--delay-ms`` before
each response head, one word per streamed chunk), one gateway (an AI route with one
alias, access log on), and a client (aiohttp on uvloop). Measured, at 1 and 50
concurrent clients, alternating direct and gateway in each round so drift hits both:

- non-streamed chat completion: latency (send to last byte), p50 and p99;
- streamed: time to first token (send to the first content chunk), p50 and p99;
- relay rate: one client streaming a 20,000-word reply with no delay, chunks (tokens)
  per second received.

"Added" is gateway minus direct, per round, median over rounds. Targets (issue): time
to first token within 2 ms p50 of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from procs import BenchError, Child, free_port, log, port_open, process_cpu_s

BENCH_DIR = Path(__file__).resolve().parent
FAKE = BENCH_DIR.parent / "examples" / "fake_llm.py"
LONG_WORDS = 20_000
CLIENT_TIMEOUT_S = 180
#: (measure, concurrent clients) in the order they run.
PLAN = (("chat", 1), ("chat", 50), ("ttft", 1), ("ttft", 50), ("relay", 1))


@dataclass
class Sample:
    kind: str  # "chat", "ttft", "relay"
    target: str
    clients: int
    round: int
    count: int
    p50_ms: float
    p99_ms: float
    rate: float  # requests/s, or chunks/s for relay
    errors: int
    gateway_cpu_s: float = 0.0


# -- the client (a child process) ----------------------------------------------------


def _has_content(event: bytes) -> bool:
    """Does this SSE event carry a token (a non-empty ``delta.content``)?"""
    data = event.partition(b"data: ")[2]
    if not data or data.startswith(b"[DONE]"):
        return False
    for choice in json.loads(data).get("choices") or ():
        if (choice.get("delta") or {}).get("content"):
            return True
    return False


async def _client(
    url: str, model: str, kind: str, clients: int, duration_s: float
) -> dict[str, float]:
    import aiohttp

    body = {"model": model, "messages": [{"role": "user", "content": "Say hello please"}]}
    if kind != "chat":
        body["stream"] = True
    timings: list[float] = []
    chunks = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal chunks, errors
            start = time.perf_counter()
            try:
                async with session.post(url, json=body) as resp:
                    if resp.status != 200:
                        errors += 1
                        await resp.read()
                        return
                    if kind == "chat":
                        await resp.read()
                        timings.append(time.perf_counter() - start)
                        return
                    first = None
                    buffer = b""
                    async for chunk in resp.content.iter_any():
                        buffer += chunk
                        *events, buffer = buffer.split(b"\n\n")
                        chunks += len(events)
                        if first is None and any(_has_content(e) for e in events):
                            first = time.perf_counter()
                    if first is not None:
                        timings.append(first - start)
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        # warm-up: connections open, caches warm
        await asyncio.gather(*(worker(time.perf_counter() + 1.0) for _ in range(clients)))
        timings.clear()
        chunks = errors = 0
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration_s) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    timings.sort()

    def pct(p: float) -> float:
        return timings[min(len(timings) - 1, int(p * len(timings)))] * 1000 if timings else 0.0

    rate = chunks / elapsed if kind == "relay" else len(timings) / elapsed
    return {
        "count": len(timings),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "rate": rate,
        "errors": errors,
    }


def run_client(url: str, model: str, kind: str, clients: int, duration_s: float) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client(url, model, kind, clients, duration_s))
    print(json.dumps(result), flush=True)


# -- the run -------------------------------------------------------------------------


def _self(*args: str) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "ai.py"), *args]


def _fake(workdir: Path, name: str, port: int, *args: str) -> Child:
    child = Child(name, [sys.executable, str(FAKE), "--port", str(port), "--quiet", *args], workdir)
    child.wait_until(lambda: port_open(port), 15, "listening")
    return child


def _config(latency_port: int, relay_port: int) -> dict[str, object]:
    return {
        "version": 1,
        "routers": [
            {
                "external_path": "/v1/{*rest}",
                "internal_path": "/v1/{*rest}",
                "methods": ["GET", "POST"],
                "plugins": [
                    {
                        "name": "ai",
                        "config": {
                            "providers": {
                                "fixed": {
                                    "kind": "openai",
                                    "url": f"http://127.0.0.1:{latency_port}/v1",
                                },
                                "long": {
                                    "kind": "openai",
                                    "url": f"http://127.0.0.1:{relay_port}/v1",
                                },
                            },
                            "models": {
                                "fast": {"targets": [{"provider": "fixed", "model": "m"}]},
                                "long": {"targets": [{"provider": "long", "model": "m"}]},
                            },
                        },
                    }
                ],
            }
        ],
    }


def _measure(
    workdir: Path, name: str, url: str, model: str, kind: str, clients: int, duration_s: float
) -> dict[str, float]:
    child = Child(name, _self("--client", url, model, kind, str(clients), str(duration_s)), workdir)
    try:
        code = child.proc.wait(timeout=CLIENT_TIMEOUT_S + duration_s)
    except Exception:
        child.stop()
        raise
    if code != 0:
        raise BenchError(f"{name} exited with {code}; stderr tail:\n{child.stderr_tail()}")
    data: dict[str, float] = json.loads(child.stdout_path.read_text().strip().splitlines()[-1])
    return data


def bench(workdir: Path, rounds: int, duration_s: float, delay_ms: int) -> list[Sample]:
    from targets import Gateway

    latency_port, relay_port = free_port(), free_port()
    fixed = _fake(workdir, "fake-fixed", latency_port, "--delay-ms", str(delay_ms))
    long = _fake(workdir, "fake-long", relay_port, "--reply", " ".join(["word"] * LONG_WORDS))
    gateway = None
    samples: list[Sample] = []
    try:
        gateway = Gateway(workdir, _config(latency_port, relay_port), name="gateway-ai")
        for i in range(1, rounds + 1):
            for kind, clients in PLAN:
                for target in ("direct", "gateway"):
                    port = (
                        gateway.port
                        if target == "gateway"
                        else (relay_port if kind == "relay" else latency_port)
                    )
                    model = ("long" if kind == "relay" else "fast") if target == "gateway" else "m"
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    before = process_cpu_s(gateway.pid) or 0.0
                    data = _measure(
                        workdir,
                        f"ai-{kind}-{clients}-{target}-{i}",
                        url,
                        model,
                        kind,
                        clients,
                        duration_s,
                    )
                    cpu = (process_cpu_s(gateway.pid) or 0.0) - before
                    sample = Sample(
                        kind,
                        target,
                        clients,
                        i,
                        int(data["count"]),
                        data["p50_ms"],
                        data["p99_ms"],
                        data["rate"],
                        int(data["errors"]),
                        cpu if target == "gateway" else 0.0,
                    )
                    samples.append(sample)
                    log(
                        f"ai round {i}: {kind} x{clients} {target}: "
                        f"p50 {sample.p50_ms:.2f} ms p99 {sample.p99_ms:.2f} ms "
                        f"rate {sample.rate:,.0f}/s errors {sample.errors}"
                    )
    finally:
        if gateway is not None:
            gateway.stop()
        fixed.stop()
        long.stop()
    return samples


def _pair(rows: list[Sample]) -> str:
    med = statistics.median
    return f"{med(r.p50_ms for r in rows):.2f} / {med(r.p99_ms for r in rows):.2f}"


def render(samples: list[Sample], duration_s: float, delay_ms: int) -> str:
    out = [
        f"\nAI section (fake provider with a {delay_ms} ms delay before the head; "
        f"{duration_s:g}s per row; medians over rounds)",
        "| measure | clients | direct p50 / p99 ms | gateway p50 / p99 ms "
        "| added p50 / p99 ms | direct rate | gateway rate | gateway errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {
        "chat": "non-streamed latency",
        "ttft": "time to first token",
        "relay": "streamed tokens relayed",
    }
    med = statistics.median
    for kind, clients in PLAN:
        direct = [s for s in samples if (s.kind, s.clients, s.target) == (kind, clients, "direct")]
        gateway = [
            s for s in samples if (s.kind, s.clients, s.target) == (kind, clients, "gateway")
        ]
        if not direct or not gateway:
            continue
        pairs = list(zip(gateway, direct, strict=True))
        added50 = med(g.p50_ms - d.p50_ms for g, d in pairs)
        added99 = med(g.p99_ms - d.p99_ms for g, d in pairs)
        unit = "tokens/s" if kind == "relay" else "req/s"
        out.append(
            f"| {names[kind]} | {clients} | {_pair(direct)} | {_pair(gateway)} "
            f"| {added50:+.2f} / {added99:+.2f} | {med(d.rate for d in direct):,.0f} {unit} "
            f"| {med(g.rate for g in gateway):,.0f} {unit} | {sum(g.errors for g in gateway)} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--client"]:
        url, model, kind, clients, duration = args_list[1:6]
        run_client(url, model, kind, int(clients), float(duration))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also save the samples here")
    args = parser.parse_args(args_list)
    with tempfile.TemporaryDirectory(prefix="kairos-bench-ai-") as tmp:
        try:
            samples = bench(Path(tmp), args.rounds, args.duration, args.delay_ms)
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    print(render(samples, args.duration, args.delay_ms))
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in samples], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
