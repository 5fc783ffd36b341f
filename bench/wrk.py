"""Run wrk and parse its text report (`--latency` distribution included)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from procs import BenchError

INSTALL_HINT = "wrk is not installed; install it with: apt-get install -y wrk"

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZE = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True, slots=True)
class WrkResult:
    url: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    socket_errors: int
    non_2xx: int

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "errors": self.errors}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return "not installed"
    proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (proc.stdout or proc.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "unknown"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(text: str, url: str, connections: int) -> WrkResult:
    """Parse wrk 4.x output. Socket errors and non-2xx lines only appear when non-zero."""
    percentiles: dict[str, float] = {}
    for pct, value, unit in re.findall(rf"^\s+(50|75|90|99)%\s+{_SIZE}\s*$", text, re.M):
        percentiles[pct] = _ms(value, unit)
    done = re.search(r"^\s+(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if done is None or rps is None or len(percentiles) != 4:
        raise BenchError(f"cannot parse wrk output for {url}:\n{text}")
    socket_errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock is not None:
        socket_errors = sum(int(n) for n in sock.groups())
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        url=url,
        connections=connections,
        duration_s=_ms(done.group(2), done.group(3)) / 1e3,
        requests=int(done.group(1)),
        rps=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p75_ms=percentiles["75"],
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
        socket_errors=socket_errors,
        non_2xx=int(non_2xx_match.group(1)) if non_2xx_match else 0,
    )


def run_wrk(
    url: str,
    connections: int,
    duration_s: int,
    headers: Sequence[str] = (),
    *,
    timeout_s: int = 5,
    threads: int = 1,
) -> WrkResult:
    """`wrk -t{threads} -c{connections} -d{duration}s --latency URL` (whole seconds),
    with a timeout; each of ``headers`` ("Name: value") is sent on every request
    (`wrk -H`); ``timeout_s`` is wrk's per-request timeout (slower answers count as
    socket errors)."""
    path = wrk_path()
    if path is None:
        raise BenchError(INSTALL_HINT)
    argv = [
        path,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        f"{timeout_s}s",
        "--latency",
        *(arg for header in headers for arg in ("-H", header)),
        url,
    ]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}) on {url}:\n{proc.stdout}{proc.stderr}")
    return parse(proc.stdout, url, connections)
