"""Subprocess helpers: every child gets its own process group and a bounded stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit


class BenchError(RuntimeError):
    """A benchmark step failed; the message says what and where to look."""


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """An unused loopback TCP port (the kernel picks it; small race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text.splitlines()[-lines:])


class Child:
    """A subprocess in its own session, its stdout/stderr written to files in `log_dir`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # own process group: Ctrl-C does not hit it directly
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 30) -> str:
        return tail(self.stderr_path, lines)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready` until true; fail with the stderr tail if the child dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(
                    f"{self.name} exited with code {self.proc.returncode} before {what}; "
                    f"stderr tail:\n{self.stderr_tail()}"
                )
            if ready():
                return
            time.sleep(0.05)
        raise BenchError(
            f"{self.name} not {what} after {timeout_s:.0f}s; stderr tail:\n{self.stderr_tail()}"
        )

    def stop(self, grace_s: float = 5.0, *, leader_only: bool = False) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; the exit code (None if lost).

        With ``leader_only`` the SIGTERM goes to the child itself, not its group: for a
        supervisor that forwards it to its workers (a second SIGTERM straight from us
        would make them skip their drain). The SIGKILL still goes to the whole group."""
        if self.alive():
            if leader_only:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
            else:
                self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=2.0)
        # Anything left in the group (nginx workers, grandchildren) goes too.
        self._signal_group(signal.SIGKILL)
        return self.proc.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_request(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 2.0,
) -> tuple[int, dict[str, str], bytes]:
    """A one-shot `GET` on a fresh connection (`Connection: close`): status, response
    headers (names lower-cased; a repeated name keeps its last value) and body."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    chunks: list[bytes] = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(request.encode())
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise BenchError(f"GET 127.0.0.1:{port}{path} failed: {exc}") from exc
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status_line = lines[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise BenchError(f"bad HTTP response from 127.0.0.1:{port}{path}: {raw[:200]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return int(status_line[1]), fields, body


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """A one-shot `GET` on a fresh connection (`Connection: close`): status and body."""
    status, _, body = http_request(port, path, timeout_s=timeout_s)
    return status, body


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB from /proc, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def child_pids(pid: int) -> list[int]:
    """The live child processes of `pid` (their parent PID read from /proc), sorted."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # exited meanwhile
        # The command name may hold spaces: fields start after its closing parenthesis.
        fields = text.rsplit(")", 1)[1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return sorted(found)


def pss_kib(pid: int) -> int | None:
    """Proportional set size of `pid` in KiB (`/proc/PID/smaps_rollup`): each shared page
    counted once over all processes sharing it. None if gone or not readable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def probe(url: str, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """One request before any load: a wrong route or port fails here, not as wrk errors.
    Returns the response headers (names lower-cased)."""
    parts = urlsplit(url)
    status, fields, body = http_request(parts.port or 80, parts.path, headers)
    if status != 200:
        raise BenchError(f"GET {url} answered {status} (expected 200): {body[:200]!r}")
    return fields


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_s() -> float | None:
    """CPU seconds spent busy (everything but idle and iowait) by all cores since boot."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest* are already
    # in user/nice.
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy / _CLK_TCK


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of `pid` in seconds, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name may hold spaces: fields start after its closing parenthesis.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK
