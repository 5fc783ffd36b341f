"""A real `redis-server` for tests, on an unused loopback port, in the foreground.

`running_redis()` starts one and stops it (and waits for it) afterwards; the
`redis_server` fixture wraps it. Without the binary the test is skipped with the
reason, except under CI (``CI=true``), where a missing Redis is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import LOOPBACK, unused_port

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisServer", "redis_server", "require_redis_binary", "running_redis"]

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def require_redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def ping(port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; `stop` and `start` again reuse the same port."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port if port is not None else unused_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        assert self.process is None, "already running"
        # The port was free a moment ago; another process could take it first, so a
        # server that exits at once is reported with its output.
        args = ["--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
        # Output to a file, not a pipe nobody reads (a full pipe would block Redis).
        fd, self.log_path = tempfile.mkstemp(prefix="kairos-redis-", suffix=".log")
        try:
            self.process = subprocess.Popen(
                [self.binary, *args, "--loglevel", "warning"],
                stdout=fd,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(fd)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.port):
            if self.process.poll() is not None:
                self.process = None
                output = Path(self.log_path).read_text(errors="replace")
                Path(self.log_path).unlink(missing_ok=True)
                raise RuntimeError(f"redis-server exited at start:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT_S}s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, then wait (Redis takes a moment to exit); SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test paused it
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        if self.log_path is not None:
            Path(self.log_path).unlink(missing_ok=True)
            self.log_path = None

    def kill(self) -> None:
        """Gone at once, as in a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)
        self.stop()

    def pause(self) -> None:
        """Accepting connections but never answering: a hung Redis."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A redis-py client of `redis_server` (redis-py loads only for tests that use it)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
