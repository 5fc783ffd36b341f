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

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after `grace_s`; the exit code (None if lost)."""
        if self.alive():
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


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """A one-shot `GET` on a fresh connection (`Connection: close`): status and body."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
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
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise BenchError(f"bad HTTP response from 127.0.0.1:{port}{path}: {raw[:200]!r}")
    return int(status_line[1]), body


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


def probe(url: str) -> None:
    """One request before any load: a wrong route or port fails here, not as wrk errors."""
    parts = urlsplit(url)
    status, body = http_get(parts.port or 80, parts.path)
    if status != 200:
        raise BenchError(f"GET {url} answered {status} (expected 200): {body[:200]!r}")
