"""Exit statuses and error lines: one class of failure each, from real servers."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from kairos_cli import ExitStatus, cli
from kairos_cli.route_input import parse_backend

from tests.cli.support import kairos, route_data
from tests.client.support import http_answer, raw_server
from tests.conftest import GatewayFactory
from tests.support import unused_port


def test_exit_statuses_are_documented_in_help() -> None:
    assert [s.value for s in ExitStatus] == [0, 1, 2, 3, 4, 5, 6]
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for status in ExitStatus:
        if status:
            assert f"  {status.value}  " in result.stdout
    for command in ("status", "health", "reload", "routes", "config", "metrics", "backends"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus", "status"],
        ["nonsense"],
        ["routes", "show"],
        ["routes", "add", "-b", "ftp://x:1"],
        ["routes", "add", "-m", "FETCH"],
        ["--url", "localhost:5900", "health"],
        ["--timeout", "0", "health"],
        ["metrics", "--count", "0"],
    ],
)
async def test_usage_errors_exit_2(args: list[str]) -> None:
    result = await kairos(*args, url=None)
    assert result.code == ExitStatus.USAGE == 2
    assert "Error:" in result.stderr


async def test_routes_add_without_any_route_is_a_usage_error(
    gateway_factory: GatewayFactory,
) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    result = await kairos("routes", "add", url=gw.url)
    assert result.code == 2
    assert "--file" in result.stderr


async def test_unreachable_exits_3() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    result = await kairos("status", url=url)
    assert result.code == ExitStatus.UNREACHABLE == 3
    assert result.stderr.startswith("kairos: gateway unreachable: GET ")
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


async def test_timeout_exits_3() -> None:
    async with raw_server(hang=True) as server:
        result = await kairos("--timeout", "0.3", "health", url=server.url)
    assert result.code == 3
    assert result.stderr.startswith("kairos: gateway did not answer in time: ")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["routes", "show", "/missing"], "kairos: 404 route_not_found: "),
        (["routes", "delete", "/missing"], "kairos: 404 route_not_found: "),
        (
            ["routes", "add", "-e", "/a", "-i", "/a", "-m", "GET", "-b", "http://h:1"],
            "kairos: 409 ",
        ),
        (
            ["routes", "add", "-e", "/b", "-i", "/b/{x}", "-m", "GET", "-b", "http://h:1"],
            "kairos: 422 invalid_config: ",
        ),
    ],
)
async def test_client_errors_exit_4(
    gateway_factory: GatewayFactory, args: list[str], line: str
) -> None:
    gw = await gateway_factory({"version": 1, "routers": [route_data("/a", "/a", 9)]})
    result = await kairos(*args, url=gw.url)
    assert result.code == ExitStatus.CLIENT_ERROR == 4
    first = result.stderr.splitlines()[0]
    assert first.startswith(line)
    assert "(request " in first


async def test_422_lists_field_errors_one_per_line(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []})
    result = await kairos(
        "routes", "add", "-e", "/x", "-i", "/y/{id}", "-b", "http://h:1", url=gw.url
    )
    assert result.code == 4
    first, *details = result.stderr.splitlines()
    assert first.startswith("kairos: 422 invalid_config: 2 configuration errors (request ")
    assert sorted(d.strip().split(":")[0] for d in details) == ["internal_path", "methods"]


async def test_server_errors_exit_5() -> None:
    problem = (
        b'{"type":"not_persisted","title":"Not persisted","status":503,'
        b'"detail":"the config file could not be written","request_id":"r-1"}'
    )
    answer = http_answer("503 Service Unavailable", problem, "application/problem+json")
    async with raw_server(answer=answer) as server:
        result = await kairos("reload", url=server.url)
    assert result.code == ExitStatus.SERVER_ERROR == 5
    assert result.stderr == (
        "kairos: 503 not_persisted: the config file could not be written (request r-1)\n"
    )

    html = http_answer("500 Internal Server Error", b"<h1>boom</h1>", "text/html")
    async with raw_server(answer=html) as server:
        result = await kairos("health", url=server.url)
    assert result.code == 5
    assert result.stderr.startswith("kairos: 500 Internal Server Error: <h1>boom</h1>")


async def test_a_garbled_answer_exits_1_and_debug_shows_the_traceback() -> None:
    answer = http_answer("200 OK", b'{"status":"sleeping"}')
    async with raw_server(answer=answer) as server:
        plain = await kairos("health", url=server.url)
    assert plain.code == ExitStatus.ERROR == 1
    assert plain.stderr.startswith("kairos: unexpected answer from the gateway: ")
    assert len(plain.stderr.splitlines()) == 1
    async with raw_server(answer=answer) as server:
        debug = await kairos("--debug", "health", url=server.url)
    assert debug.code == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("kairos: unexpected answer")


@pytest.mark.parametrize(
    ("spec", "backend"),
    [
        ("http://10.0.0.5:8080", {"host": "http://10.0.0.5", "port": 8080}),
        ("HTTPS://api.example", {"host": "https://api.example", "port": 443}),
        ("users:3000,weight=2", {"host": "http://users", "port": 3000, "weight": 2}),
        ("http://[::1]:81", {"host": "http://[::1]", "port": 81}),
        (
            "https://h:1,health_check_path=/hc,tls_verify=false",
            {"host": "https://h", "port": 1, "health_check_path": "/hc", "tls_verify": False},
        ),
    ],
)
def test_parse_backend(spec: str, backend: dict[str, object]) -> None:
    assert parse_backend(spec) == backend


@pytest.mark.parametrize(
    "spec",
    [
        "ftp://h:1",
        "http://h:1/path",
        "http://h:99999",
        "http://h:1,weight=x",
        "http://h:1,colour=red",
    ],
)
def test_parse_backend_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match=r"http|weight|unknown|port"):
        parse_backend(spec)
