"""The processes under test: backend (nginx or Python), nginx reference proxy, gateway,
and a private redis-server for the rate-limit store (edge section)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import redis
from procs import BenchError, Child, free_port, http_get, port_open

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

#: Path the gateway and the nginx proxy are benchmarked on, and what they send upstream.
PROXY_PATH = "/api/users/123"
BACKEND_PATH = "/users/123"

NGINX_STATUS_PATH = "/nginx_status"
START_TIMEOUT_S = 15.0

# Shared by both nginx instances. `keepalive_requests` is raised from nginx's default
# (1000) so that neither nginx closes a keep-alive connection behind a proxy's back and
# the upstream reuse figure measures the proxy, not the backend's recycling.
_NGINX_COMMON = """\
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{body}
}}
"""

_BACKEND_HTTP = """\
    access_log off;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        default_type text/plain;
        location = {status} {{ stub_status; }}
        location / {{ return 200 "ok\\n"; }}
    }}
"""

_PROXY_HTTP = """\
    access_log {dir}/access.log;
    upstream kairos_bench_backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /api/users/ {{
            proxy_pass http://kairos_bench_backend/users/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


@dataclass(frozen=True, slots=True)
class BackendStats:
    accepts: int
    requests: int


def nginx_path() -> str | None:
    return shutil.which("nginx")


def _start_nginx(name: str, workdir: Path, http_block: str, port: int) -> Child:
    nginx = nginx_path()
    if nginx is None:
        raise BenchError("nginx is not on PATH")
    prefix = workdir / name
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_COMMON.format(dir=prefix, body=http_block))
    # -e: the error log before the config is read; without it nginx opens its compiled-in
    # default (/var/log/nginx/error.log), which is root-owned state we must not touch.
    argv = [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    child = Child(name, argv, workdir)
    try:
        child.wait_until(lambda: port_open(port), START_TIMEOUT_S, f"listening on {port}")
    except BaseException:
        child.stop()
        raise
    return child


class Backend:
    """The origin server: nginx `return 200` if installed, else `pybackend.py`.

    ``name`` prefixes its prefix dir and log files (several backends share a work dir);
    ``delay_ms`` > 0 starts the Python backend with `--delay-ms` (a slow backend).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        prefer_nginx: bool = True,
        name: str = "backend",
        delay_ms: float = 0.0,
    ) -> None:
        self.port = free_port()
        self.name = name
        self.delay_ms = delay_ms
        self.kind = "nginx" if prefer_nginx and delay_ms <= 0 and nginx_path() else "python"
        if self.kind == "nginx":
            block = _BACKEND_HTTP.format(port=self.port, status=NGINX_STATUS_PATH)
            self.child = _start_nginx(f"{name}-nginx", workdir, block, self.port)
        else:
            argv = [sys.executable, str(BENCH_DIR / "pybackend.py"), "--port", str(self.port)]
            if delay_ms > 0:
                argv += ["--delay-ms", f"{delay_ms:g}"]
            self.child = Child(f"{name}-python", argv, workdir)
            try:
                self.child.wait_until(
                    lambda: port_open(self.port), START_TIMEOUT_S, f"listening on {self.port}"
                )
            except BaseException:
                self.child.stop()
                raise

    @property
    def label(self) -> str:
        return f"direct backend ({self.kind})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BACKEND_PATH}"

    def stats(self) -> BackendStats:
        """Accepted connections and requests so far (this query's own one included)."""
        if self.kind == "nginx":
            status, body = http_get(self.port, NGINX_STATUS_PATH)
            # "server accepts handled requests\n 12 12 345 \n"
            found = re.search(rb"accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)", body)
            if status != 200 or found is None:
                raise BenchError(f"unexpected stub_status answer {status}: {body[:200]!r}")
            return BackendStats(accepts=int(found.group(1)), requests=int(found.group(3)))
        status, body = http_get(self.port, "/__bench_stats")
        data = json.loads(body)
        return BackendStats(accepts=int(data["accepts"]), requests=int(data["requests"]))

    def stop(self) -> None:
        self.child.stop()


class NginxProxy:
    """nginx `proxy_pass` with an upstream keep-alive pool: the reference proxy."""

    label = "nginx proxy"

    def __init__(self, workdir: Path, backend_port: int) -> None:
        self.port = free_port()
        block = _PROXY_HTTP.format(
            port=self.port, backend_port=backend_port, dir=workdir / "proxy-nginx"
        )
        self.child = _start_nginx("proxy-nginx", workdir, block, self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PROXY_PATH}"

    def stop(self) -> None:
        self.child.stop()


def gateway_config(backend_port: int, extra_routes: int = 20) -> dict[str, object]:
    """The benchmark route plus `extra_routes` static and dynamic decoys on the same backend."""
    backend = {"host": "http://127.0.0.1", "port": backend_port}
    routers: list[dict[str, object]] = [
        {
            "external_path": "/api/users/{id}",
            "internal_path": "/users/{id}",
            "methods": ["GET"],
            "backends": [backend],
        }
    ]
    for i in range(extra_routes):
        if i % 2:
            external, internal = f"/api/svc{i}/items/{{id}}", f"/svc{i}/items/{{id}}"
        else:
            external, internal = f"/api/svc{i}/items", f"/svc{i}/items"
        routers.append(
            {
                "external_path": external,
                "internal_path": internal,
                "methods": ["GET", "POST"],
                "backends": [backend],
            }
        )
    return {"version": 1, "routers": routers}


def _gateway_argv() -> list[str]:
    """Run the gateway's own interpreter directly (not via `uv run`), so the PID we hold
    is the gateway process itself and its RSS can be read from /proc."""
    script = Path(sys.executable).parent / "kairos-gateway"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "kairos_gateway"]


class Gateway:
    """One `kairos-gateway` process: routing, metrics and a file access log all on.

    ``config`` is the gateway config (`gateway_config` for the core benchmark);
    ``name`` names its config, access-log and stderr files in the work dir;
    ``workers`` is passed as `--workers N` (N > 1: a supervisor forks N workers, all in
    the child's process group; it is ready once every worker logged "listening on").
    """

    label = "kairos gateway"

    def __init__(
        self,
        workdir: Path,
        config: dict[str, object],
        *,
        name: str = "gateway",
        workers: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self.port = free_port()
        self.config_path = workdir / f"{name}-config.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.access_log_path = workdir / f"{name}-access.log"
        routers = config.get("routers")
        self.routes = len(routers) if isinstance(routers, list) else 0
        extra_env = env or {}
        env = dict(os.environ)
        env.update(
            KAIROS_ACCESS_LOG=str(self.access_log_path),
            KAIROS_LOG_FORMAT="json",
            KAIROS_DRAIN_TIMEOUT_S="2",
        )
        env.update(extra_env)
        argv = [
            *_gateway_argv(),
            "--config",
            str(self.config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if workers is not None:
            argv += ["--workers", str(workers)]
        self.child = Child(name, argv, workdir, env=env, cwd=REPO_ROOT)
        try:
            self.child.wait_until(self._listening, START_TIMEOUT_S, "listening")
        except BaseException:
            self.child.stop()
            raise

    def _listening(self) -> bool:
        try:
            text = self.child.stderr_path.read_text(errors="replace")
        except OSError:
            return False
        expected = max(1, self.workers or 1)
        return text.count("listening on") >= expected and port_open(self.port)

    @property
    def url(self) -> str:
        return self.url_for(PROXY_PATH)

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        return self.child.pid

    def access_log_lines(self) -> int:
        try:
            with self.access_log_path.open("rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def stop(self) -> int | None:
        """Stop (SIGTERM, drain) and return the exit code; the access log is flushed then."""
        # With workers, SIGTERM the supervisor alone: it forwards it to each worker once.
        return self.child.stop(grace_s=10.0, leader_only=(self.workers or 1) > 1)


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def redis_version() -> str:
    path = redis_server_path()
    if path is None:
        return "not installed"
    proc = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    found = re.search(r"v=(\S+)", proc.stdout)
    return found.group(1) if found else (proc.stdout.strip() or "unknown")


class RedisServer:
    """A private `redis-server` on a free loopback port: no persistence (`--save ""`,
    `--appendonly no`), its working directory in the work dir, stopped with `stop`."""

    label = "redis-server"

    def __init__(self, workdir: Path, *, name: str = "redis") -> None:
        path = redis_server_path()
        if path is None:
            raise BenchError("redis-server is not on PATH (apt-get install -y redis-server)")
        self.port = free_port()
        data_dir = workdir / name
        data_dir.mkdir(exist_ok=True)
        argv = [
            path,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(data_dir),
            "--logfile",
            "",  # log to stdout, i.e. the child's stdout file
        ]
        self.child = Child(name, argv, workdir)
        try:
            self.child.wait_until(self._ready, START_TIMEOUT_S, f"answering PING on {self.port}")
        except BaseException:
            self.child.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0
        )

    def _ready(self) -> bool:
        try:
            with self._client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def evalsha_calls(self) -> int:
        """EVALSHA calls so far (`INFO commandstats`): one per rate-limit check. The
        commands a script runs inside Redis are counted apart, under their own names."""
        try:
            with self._client() as client:
                stats = client.info("commandstats")
        except redis.RedisError as exc:
            raise BenchError(f"redis INFO on port {self.port} failed: {exc}") from exc
        entry = stats.get("cmdstat_evalsha")
        return int(entry["calls"]) if isinstance(entry, dict) else 0

    def flush(self) -> None:
        try:
            with self._client() as client:
                client.flushall()
        except redis.RedisError as exc:
            raise BenchError(f"redis FLUSHALL on port {self.port} failed: {exc}") from exc

    def stop(self) -> int | None:
        return self.child.stop()
