"""Describe the machine a benchmark ran on."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

from targets import nginx_path, redis_version
from wrk import wrk_version


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nginx_version() -> str:
    path = nginx_path()
    if path is None:
        return "not installed"
    proc = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    text = (proc.stderr or proc.stdout).strip()
    return text.removeprefix("nginx version: ") or "unknown"


def describe() -> dict[str, str]:
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count() or "?"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "nginx": nginx_version(),
        "wrk": wrk_version(),
        "redis": redis_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
