"""`kairos-gateway` as a real process: config errors, defaults, signals."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from kairos_gateway import GatewaySettings

from tests.support import EchoBackend, raw_request, route, unused_port
from tests.support import clean_env as _env
from tests.support import gateway_process as running

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "config.json"


async def _run(*args: str, cwd: Path, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_gateway",
        *args,
        cwd=cwd,
        env=_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


async def test_check_accepts_a_valid_config(tmp_path: Path) -> None:
    path = _write(tmp_path, {"version": 1, "routers": []})
    code, out, err = await _run("--check", "--config", str(path), cwd=tmp_path)
    assert code == 0, err
    assert "valid" in out


async def test_invalid_config_lists_errors_without_a_traceback(tmp_path: Path) -> None:
    bad = {
        "version": 1,
        "routers": [
            {
                "external_path": "users/{id",
                "internal_path": "/u",
                "methods": ["GET"],
                "backends": [{"host": "http://a", "port": 0}],
                "load_balancing_stratgy": "round_robin",
            }
        ],
    }
    path = _write(tmp_path, bad)
    code, _, err = await _run("--config", str(path), cwd=tmp_path)
    assert code == 1
    assert "Traceback" not in err
    assert "routers[0].external_path" in err
    assert "routers[0].backends[0].port" in err
    assert "load_balancing_strategy" in err  # the typo gets a suggestion


async def test_malformed_json_is_one_readable_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"version": 1,\n "routers": [}')
    code, _, err = await _run("--check", "--config", str(path), cwd=tmp_path)
    assert code == 1
    assert "Traceback" not in err
    assert re.search(r"line 2", err)


async def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    code, _, err = await _run("--check", "--config", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert code == 1
    assert "Traceback" not in err


async def test_bad_environment_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = await _run("--check", cwd=tmp_path, KAIROS_PORT="eighty")
    assert code == 2
    assert err.strip() == "kairos-gateway: KAIROS_PORT='eighty' is not a port number"


async def test_starts_on_builtin_default_without_config(tmp_path: Path) -> None:
    async with running(cwd=tmp_path) as (proc, port, records):
        assert any("no config file" in r["message"] for r in records)
        resp = await raw_request(port, "/health")
        assert resp.status == 200
        assert resp.json()["routes"] == 0
        assert (await raw_request(port, "/anything")).status == 404
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_port_in_use_is_reported(tmp_path: Path) -> None:
    async with running(cwd=tmp_path) as (_, port, _records):
        code, _, err = await _run("--host", "127.0.0.1", "--port", str(port), cwd=tmp_path)
        assert code == 3
        assert "cannot listen" in err
        assert "Traceback" not in err


async def test_example_config_proxies_a_path_parameter(
    tmp_path: Path, backend: EchoBackend
) -> None:
    example = json.loads(EXAMPLE.read_text())
    # Point every backend of the example at the test's backend.
    for router in example["routers"]:
        for b in router["backends"]:
            b["host"], b["port"] = "http://127.0.0.1", backend.port
    path = _write(tmp_path, example)
    async with running("--config", str(path), cwd=tmp_path) as (proc, port, _):
        resp = await raw_request(port, "/api/users/42")
        assert resp.status == 200
        assert resp.json()["uri"] == "/users/42"
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_example_config_is_valid_as_shipped(tmp_path: Path) -> None:
    code, _, err = await _run("--check", "--config", str(EXAMPLE), cwd=tmp_path)
    assert code == 0, err


async def test_sigterm_lets_an_in_flight_request_finish(
    tmp_path: Path, backend: EchoBackend
) -> None:
    path = _write(tmp_path, {"version": 1, "routers": [route("/stream", "/stream", [backend])]})
    async with running("--config", str(path), cwd=tmp_path) as (proc, port, records):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"first-chunk;\r\n"), 5)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):  # the log line that says it is waiting for us
            while not any(r["message"] == "draining" for r in records):
                assert proc.returncode is None, "gateway exited without draining"
                await asyncio.sleep(0.01)
        assert proc.returncode is None  # still draining
        backend.release.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert b"second-chunk" in rest
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        writer.close()


@pytest.mark.parametrize("level_var", ["KAIROS_LOG_LEVEL", "RUST_LOG"])
async def test_text_log_format_and_level(tmp_path: Path, level_var: str) -> None:
    port = unused_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kairos_gateway",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=tmp_path,
        env=_env(KAIROS_LOG_FORMAT="text", **{level_var: "error"}),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):  # wait until it serves, then stop it
        while True:
            try:
                if (await raw_request(port, "/live")).status == 200:
                    break
            except OSError:
                await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 10)
    # INFO and WARNING lines (listening, no config file, no admin token) are below the
    # level: nothing printed.
    assert err.decode() == ""
    assert proc.returncode == 0


async def test_unreadable_ca_file_fails_the_check(tmp_path: Path) -> None:
    config = {
        "version": 1,
        "routers": [
            {
                "external_path": "/x",
                "internal_path": "/x",
                "methods": ["GET"],
                "backends": [
                    {"host": "https://a.test", "port": 443, "tls_ca_file": "/nonexistent/ca.pem"}
                ],
            }
        ],
    }
    code, _, err = await _run("--check", "--config", str(_write(tmp_path, config)), cwd=tmp_path)
    assert code == 1
    assert "routers[0].backends[0].tls_ca_file" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
async def test_non_finite_timeouts_are_refused(tmp_path: Path, value: str) -> None:
    code, _, err = await _run("--check", cwd=tmp_path, KAIROS_DRAIN_TIMEOUT_S=value)
    assert code == 2
    assert "KAIROS_DRAIN_TIMEOUT_S" in err


async def test_a_jwt_key_too_short_for_its_algorithm_fails_the_check(tmp_path: Path) -> None:
    # 40 bytes pass the generic floor but HS512 needs 64 (RFC 7518): caught before serving.
    config = {"version": 1, "jwt": {"secret": "s" * 40, "algorithms": ["HS512"]}, "routers": []}
    path = _write(tmp_path, config)
    code, _, err = await _run("--check", "--config", str(path), cwd=tmp_path)
    assert code == 1
    assert "jwt" in err
    assert "Traceback" not in err
    code, _, err = await _run("--config", str(path), cwd=tmp_path)
    assert code == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("50000,20,20", (50_000, 20, 20)), ("700, 10, 10", (700, 10, 10)), ("python", None)],
)
def test_gc_thresholds_from_the_environment(
    raw: str, expected: tuple[int, int, int] | None
) -> None:
    assert GatewaySettings.from_env({"KAIROS_GC_THRESHOLDS": raw}).gc_thresholds == expected
    assert GatewaySettings.from_env({}).gc_thresholds == (50_000, 20, 20)


@pytest.mark.parametrize("value", ["1,2", "a,b,c", "-1,10,10"])
async def test_bad_gc_thresholds_are_refused(tmp_path: Path, value: str) -> None:
    code, _, err = await _run("--check", cwd=tmp_path, KAIROS_GC_THRESHOLDS=value)
    assert code == 2
    assert "KAIROS_GC_THRESHOLDS" in err
    assert "Traceback" not in err
