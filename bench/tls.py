"""TLS section: HTTPS against plain HTTP on the same gateway build, and TLS handshakes.

    uv run python bench/run.py --only tls [--duration 10] [--quick]
    uv run python bench/tls.py [--duration 10] [--rounds 4] [--quick]

One nginx backend (`return 200`, the Python backend without nginx) and two gateway
processes of the working tree with the same route (`/plain/{id}` -> `/users/{id}`):
one plain, one with ``listen.tls`` (an ECDSA P-256 certificate from a trustme CA;
TLS 1.3 is what wrk and the gateway agree on).

* **keep-alive**: wrk -t1 -c50 on each, in rounds that alternate which goes first;
  req/s and the gateway's CPU time per request (utime + stime of its process).
  Target: HTTPS >= 0.80x the plain req/s.
* **new connections**: the same with ``Connection: close`` (one TCP connection and, on
  HTTPS, one handshake per request, as wrk makes them: it may offer the session of its
  previous connection).
* **handshakes/s**: ``openssl s_time`` processes in parallel against the TLS gateway,
  each connecting, handshaking and closing in a loop for the run's duration: ``-new``
  (full handshakes: key exchange and certificate signature) with TLS 1.3 and 1.2, and
  ``-reuse -tls1_2`` (sessions resumed; s_time reads nothing after the handshake, so it
  never receives a TLS 1.3 session ticket and cannot resume 1.3). The figure is
  connections completed / wall seconds, summed over the clients; the full TLS 1.3
  handshake is measured with an RSA 2048 certificate too, and against nginx
  (``worker_processes 1``, the same certificate and OpenSSL) for reference.

Exit codes: 0 when the run completed (whatever the verdict), 1 when a step failed,
2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trustme
from procs import BenchError, free_port, log, process_cpu_s
from targets import Backend, Gateway, _start_nginx, nginx_path
from wrk import INSTALL_HINT, WrkResult, run_wrk, wrk_path

CONNECTIONS = 50
TARGET_KEEPALIVE = 0.80  # HTTPS / plain req/s with keep-alive
S_TIME_CLIENTS = 2

Run = tuple[WrkResult, float]  # wrk's figures, gateway CPU seconds per request


def _config(port: int, tls: dict[str, str] | None = None) -> dict[str, object]:
    config: dict[str, object] = {
        "version": 1,
        "routers": [
            {
                "external_path": "/plain/{id}",
                "internal_path": "/users/{id}",
                "methods": ["GET"],
                "backends": [{"host": "http://127.0.0.1", "port": port}],
            }
        ],
    }
    if tls is not None:
        config["listen"] = {"tls": tls}
    return config


def write_certificate(ca: trustme.CA, workdir: Path, name: str, key_type: str) -> dict[str, str]:
    issued = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType[key_type])
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return {"cert_file": str(cert), "key_file": str(key)}


def https_url(gateway: Gateway, path: str) -> str:
    return f"https://127.0.0.1:{gateway.port}{path}"


def probe_https(url: str, ca: trustme.CA) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        if resp.status != 200:
            raise BenchError(f"GET {url} answered {resp.status}")


def alternate(
    sides: dict[str, tuple[str, int]],
    duration_s: int,
    rounds: int,
    headers: tuple[str, ...] = (),
) -> dict[str, list[Run]]:
    """wrk on each side's (URL, gateway pid), the order alternating every round."""
    names = list(sides)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for round_no in range(rounds):
        order = names if round_no % 2 == 0 else list(reversed(names))
        for name in order:
            url, pid = sides[name]
            cpu_before = process_cpu_s(pid)
            result = run_wrk(url, CONNECTIONS, duration_s, headers)
            cpu_after = process_cpu_s(pid)
            if result.errors > result.requests // 1000:
                raise BenchError(f"{name}: {result.errors} errors in {result.requests} requests")
            if cpu_before is None or cpu_after is None or not result.requests:
                raise BenchError(f"{name}: the gateway process is gone")
            cpu = (cpu_after - cpu_before) / result.requests
            log(
                f"  round {round_no + 1} {name}: {result.rps:,.0f} req/s "
                f"p50 {result.p50_ms} ms, {cpu * 1e6:.0f} us CPU/request"
                + (f", {result.errors} errors" if result.errors else "")
            )
            runs[name].append((result, cpu))
    return runs


def summary(runs: dict[str, list[Run]], a: str, b: str, target: float | None) -> str:
    ra = statistics.median(r.rps for r, _ in runs[a])
    rb = statistics.median(r.rps for r, _ in runs[b])
    ca = statistics.median(c for _, c in runs[a])
    cb = statistics.median(c for _, c in runs[b])
    ratio = rb / ra
    each = "; ".join(
        f"{x.rps:,.0f} / {y.rps:,.0f}" for (x, _), (y, _) in zip(runs[a], runs[b], strict=True)
    )
    verdict = (
        "" if target is None else f"; target >= {target} {'PASS' if ratio >= target else 'MISS'}"
    )
    return (
        f"{b} / {a}: {ratio:.3f}x req/s (median {rb:,.0f} vs {ra:,.0f}; per round "
        f"{a} / {b}: {each}); gateway CPU per request {cb * 1e6:.0f} vs {ca * 1e6:.0f} us"
        f"{verdict}"
    )


_S_TIME = re.compile(r"(\d+) connections in ([\d.]+)s")


def s_time(port: int, args: list[str], duration_s: int, pid: int, clients: int) -> str:
    """``clients`` parallel ``openssl s_time -connect ... ARGS``: handshakes per second
    (summed), the share resumed and the gateway's CPU time per handshake."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return "openssl not installed: no handshake figure"
    argv = [openssl, "s_time", "-connect", f"127.0.0.1:{port}", *args, "-time"]
    cpu_before = process_cpu_s(pid)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [*argv, str(duration_s)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(clients)
    ]
    outputs = [p.communicate(timeout=duration_s + 30)[0] for p in procs]
    wall = time.monotonic() - started
    cpu_after = process_cpu_s(pid)
    total = 0
    # s_time prints one character per connection: "r" when the session was resumed.
    marks = "".join(m for o in outputs for m in re.findall(r"^[r*]+$", o, re.M))
    for out in outputs:
        found = _S_TIME.findall(out)
        if not found:
            raise BenchError(f"cannot parse openssl s_time output:\n{out}")
        # The last "N connections in Ts" line is the run (s_time -reuse prints two).
        total += int(found[-1][0])
    rate = total / wall
    cpu = (cpu_after - cpu_before) / total if cpu_before is not None and cpu_after else 0.0
    resumed = marks.count("r") / len(marks) if marks else 0.0
    return (
        f"{rate:,.0f} handshakes/s ({total:,} in {wall:.1f}s, {resumed:.0%} resumed), "
        f"{cpu * 1e6:.0f} us gateway CPU each"
    )


_NGINX_TLS = """\
    access_log off;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "ok\\n"; }}
    }}
"""


def nginx_handshakes(workdir: Path, cert: dict[str, str], duration_s: int) -> str:
    """The reference: full TLS 1.3 handshakes/s against one nginx worker."""
    if nginx_path() is None:
        return "nginx not installed: no reference"
    port = free_port()
    block = _NGINX_TLS.format(port=port, cert=cert["cert_file"], key=cert["key_file"])
    child = _start_nginx("tls-nginx", workdir, block, port)
    try:
        return s_time(port, ["-new"], duration_s, child.pid, S_TIME_CLIENTS)
    finally:
        child.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    parser.add_argument("--python-backend", action="store_true")
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    duration = 3 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds
    warmup = 2 if args.quick else 3
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-tls-"))
    backend: Backend | None = None
    gateways: list[Gateway] = []
    lines: list[str] = []
    try:
        backend = Backend(workdir, name="tls-backend", prefer_nginx=not args.python_backend)
        ca = trustme.CA()
        ecdsa = write_certificate(ca, workdir, "ecdsa", "ECDSA")
        rsa = write_certificate(ca, workdir, "rsa", "RSA")
        plain = Gateway(workdir, _config(backend.port), name="gw-plain")
        gateways.append(plain)
        secure = Gateway(workdir, _config(backend.port, ecdsa), name="gw-tls")
        gateways.append(secure)
        probe_https(https_url(secure, "/plain/123"), ca)
        sides = {
            "http": (plain.url_for("/plain/123"), plain.pid),
            "https": (https_url(secure, "/plain/123"), secure.pid),
        }
        for name, (url, _) in sides.items():
            log(f"  warm-up {name}: {warmup}s")
            run_wrk(url, CONNECTIONS, warmup)
        log(f"keep-alive: wrk -t1 -c{CONNECTIONS}, {duration}s x {rounds} rounds")
        runs = alternate(sides, duration, rounds)
        lines.append("keep-alive " + summary(runs, "http", "https", TARGET_KEEPALIVE))
        # The handshake rows come before the Connection: close runs, which leave tens
        # of thousands of loopback ports in TIME_WAIT behind them.
        for label, s_args in (
            ("TLS 1.3 full", ["-new"]),
            ("TLS 1.2 full", ["-new", "-tls1_2"]),
            ("TLS 1.2 resumed", ["-reuse", "-tls1_2"]),
        ):
            log(f"openssl s_time {' '.join(s_args)}, {S_TIME_CLIENTS} clients, {duration}s")
            figure = s_time(secure.port, s_args, duration, secure.pid, S_TIME_CLIENTS)
            lines.append(f"handshakes ECDSA P-256 {label}: {figure}")
        secure_rsa = Gateway(workdir, _config(backend.port, rsa), name="gw-tls-rsa")
        gateways.append(secure_rsa)
        log(f"openssl s_time -new, {S_TIME_CLIENTS} clients, {duration}s (RSA 2048)")
        probe_https(https_url(secure_rsa, "/plain/123"), ca)
        figure = s_time(secure_rsa.port, ["-new"], duration, secure_rsa.pid, S_TIME_CLIENTS)
        lines.append(f"handshakes RSA 2048 TLS 1.3 full: {figure}")
        secure_rsa.stop()
        gateways.remove(secure_rsa)
        log(f"nginx reference: openssl s_time -new, {S_TIME_CLIENTS} clients, {duration}s")
        figure = nginx_handshakes(workdir, ecdsa, duration)
        lines.append(f"handshakes ECDSA P-256 TLS 1.3 full, nginx (1 worker): {figure}")
        log("new connection per request (Connection: close)")
        runs = alternate(sides, duration, rounds, ("Connection: close",))
        lines.append("Connection: close " + summary(runs, "http", "https", None))
    except BenchError as exc:
        print(f"tls bench failed: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        for gw in gateways:
            gw.stop()
        if backend is not None:
            backend.stop()
    print(f"\nTLS section (wrk -t1 -c{CONNECTIONS}, {duration}s x {rounds} rounds)")
    for line in lines:
        print("  " + line)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
