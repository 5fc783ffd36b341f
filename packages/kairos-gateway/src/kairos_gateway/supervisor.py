"""Several worker processes on one port (`--workers N`).

The supervisor forks N workers before any event loop exists. Each worker binds the
port itself with SO_REUSEPORT, so the kernel spreads new connections evenly over them.
The supervisor serves no traffic; it

- forwards SIGTERM / SIGINT to the workers and waits for them to drain;
- forwards SIGHUP (reload the config file) to every worker;
- on SIGUSR1 from a worker (its management API changed the config and saved it),
  sends SIGUSR2 to every worker, which then re-reads the file if it differs from what
  it runs, so a change made through any worker reaches all of them;
- on CACHE_PURGED from a worker (it journaled a cache purge, see `cache.workers`),
  sends CACHE_PURGED to every worker, which applies the journal to its memory stores;
- restarts a worker that dies unexpectedly (at most `MAX_RESTARTS` in
  `RESTART_WINDOW_S`, then it stops the gateway rather than crash-loop);
- owns the directory where workers publish their metrics, so `/metrics` on any worker
  reports the whole gateway.

With port 0 the supervisor reserves a free port first (a bound, never-listening
SO_REUSEPORT socket) so every worker binds the same one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("kairos.gateway")

_PR_SET_PDEATHSIG = 1

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0

#: Worker -> supervisor: "I changed and saved the config".
CONFIG_CHANGED = signal.SIGUSR1
#: Supervisor -> workers: "re-read the config file if it changed".
SYNC_CONFIG = signal.SIGUSR2
#: Worker -> supervisor, then supervisor -> workers: "a cache purge is in the journal".
#: A signal whose default action is to ignore it: a worker not yet listening for it
#: (starting up) is not killed, and its store is empty anyway.
CACHE_PURGED = signal.SIGURG


def reserve_port(host: str, port: int) -> tuple[int, socket.socket | None]:
    """The port workers should bind; for port 0, a reserved free one (keep the socket)."""
    if port != 0:
        return port, None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return int(sock.getsockname()[1]), sock


def _exit_with_parent() -> None:
    """Ask Linux to send this worker SIGTERM when the supervisor dies (even by SIGKILL),
    so no orphaned worker keeps the port. Elsewhere, a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def supervise(workers: int, run_worker: Callable[[int, Path], int]) -> int:
    """Fork ``workers`` processes running ``run_worker(index, metrics_dir)``; return the
    exit code for the supervisor once they have all stopped."""
    supervisor = os.getpid()
    metrics_dir = Path(tempfile.mkdtemp(prefix="kairos-metrics-"))
    children: dict[int, int] = {}  # pid -> worker index
    restarts: list[float] = []
    stopping = False
    failed = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            for signum in (
                signal.SIGTERM,
                signal.SIGINT,
                signal.SIGHUP,
                CONFIG_CHANGED,
                CACHE_PURGED,
            ):
                signal.signal(signum, signal.SIG_DFL)
            _exit_with_parent()
            if os.getppid() != supervisor:
                os._exit(1)  # the supervisor died before the request above took effect
            code = 1
            try:
                code = run_worker(index, metrics_dir)
            finally:
                os._exit(code)
        children[pid] = index

    def send_all(signum: int) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def on_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("stopping workers", extra={"fields": {"signal": signal.Signals(signum).name}})
        stopping = True
        send_all(signum)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda *_: send_all(signal.SIGHUP))
    signal.signal(CONFIG_CHANGED, lambda *_: send_all(SYNC_CONFIG))
    signal.signal(CACHE_PURGED, lambda *_: send_all(CACHE_PURGED))

    try:
        for index in range(workers):
            spawn(index)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = children.pop(pid, -1)
            code = os.waitstatus_to_exitcode(status)
            if stopping or index < 0:
                continue
            now = time.monotonic()
            restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW_S]
            if len(restarts) >= MAX_RESTARTS:
                log.error(
                    "workers keep dying; stopping the gateway",
                    extra={"fields": {"worker": index, "exit_code": code}},
                )
                failed = stopping = True
                send_all(signal.SIGTERM)
                continue
            restarts.append(now)
            log.warning(
                "worker died; starting a new one",
                extra={"fields": {"worker": index, "pid": pid, "exit_code": code}},
            )
            spawn(index)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 1 if failed else 0
