"""Prove `pip install kairos-client` works from built wheels alone.

Builds the kairos-core and kairos-client wheels, installs kairos-client with plain pip
into a fresh virtual environment of the machine's Python (kairos-core from the built
wheels, aiohttp and pydantic from the package index), starts a real gateway, and calls
it from that environment. Stdlib only; every step has a time limit; exits non-zero
(and says why) on any failure.

Run it with the machine's python, not the workspace's: ``python3 .ci/wheel_check.py``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kairos-core", "kairos-client")
#: uv itself, or as a module of this python (how .ci/run installs it when missing).
UV = [shutil.which("uv") or sys.executable, *([] if shutil.which("uv") else ["-m", "uv"])]

SCRIPT = """
import asyncio, sys
import kairos_client, kairos_core
import kairos_core.api  # new in this version: the wheel built here, not another
from importlib.metadata import version
from kairos_client import KairosClient

assert "site-packages" in kairos_client.__file__, kairos_client.__file__
assert "site-packages" in kairos_core.__file__, kairos_core.__file__
print("kairos-client", version("kairos-client"), "kairos-core", version("kairos-core"))

async def main() -> None:
    async with KairosClient(sys.argv[1], timeout=10) as client:
        health = await client.health()
        assert health.status == "healthy", health
        print("health():", health.status, "gateway", health.version)
        routes = await client.list_routes()
        print("list_routes():", len(routes.value.routes), "routes, etag", routes.etag)
        assert routes.etag

asyncio.run(main())
"""


def run(*args: str | Path, timeout: float, show: str | None = None, **kwargs: Any) -> None:
    print("$", show or " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, timeout=timeout, **kwargs)  # noqa: S603


def machine_python() -> str:
    """The interpreter this script's venv (if any) was made from."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.base_prefix) / "bin" / name, Path(sys.base_prefix) / "bin/python3"):
        if candidate.exists():
            return str(candidate)
    return sys.executable


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAIROS_", "RUST_LOG", "VIRTUAL_ENV", "UV_PROJECT"))
    }


def start_gateway(workdir: Path) -> tuple[subprocess.Popen[str], int]:
    """`kairos-gateway --port 0` in ``workdir``; the port from its "listening on" line."""
    env = {**clean_env(), "KAIROS_LOG_FORMAT": "json", "KAIROS_ACCESS_LOG": "off"}
    cmd = [*UV, "run", "--project", str(ROOT), "kairos-gateway", "--host", "127.0.0.1"]
    proc = subprocess.Popen(  # noqa: S603
        [*cmd, "--port", "0"],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    stderr = proc.stderr

    def pump() -> None:
        for line in stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=60)
        except queue.Empty:
            raise SystemExit("wheel check: the gateway did not start within 60 s") from None
        if line is None:
            raise SystemExit(f"wheel check: the gateway exited early ({proc.wait(10)})")
        try:
            record = json.loads(line)
        except ValueError:
            continue  # uv's own output
        if str(record.get("message", "")).startswith("listening on"):
            return proc, int(record["port"])


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    temp = Path(tempfile.mkdtemp(prefix="kairos-wheel-check-"))
    gateway: subprocess.Popen[str] | None = None
    try:
        dist = temp / "dist"
        for package in PACKAGES:
            run(
                *UV,
                "build",
                "--package",
                package,
                "--wheel",
                "--out-dir",
                dist,
                timeout=300,
                cwd=ROOT,
            )
        print("built:", ", ".join(sorted(p.name for p in dist.glob("*.whl"))), flush=True)

        venv = temp / "venv"
        run(machine_python(), "-m", "venv", venv, timeout=120)
        python = venv / "bin" / "python"
        run(
            python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--find-links", dist, "kairos-client",
            timeout=600, env=clean_env(),
        )  # fmt: skip

        workdir = temp / "gateway"
        workdir.mkdir()
        gateway, port = start_gateway(workdir)
        print(f"gateway listening on 127.0.0.1:{port}", flush=True)
        url = f"http://127.0.0.1:{port}"
        show = f"{python} -c <health() and list_routes()> {url}"
        run(python, "-c", SCRIPT, url, timeout=60, cwd=temp, env=clean_env(), show=show)
    except subprocess.CalledProcessError as exc:
        print(f"wheel check FAILED: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"wheel check FAILED: timed out: {exc}", file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            stop(gateway)
        shutil.rmtree(temp, ignore_errors=True)
    print("wheel check passed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
