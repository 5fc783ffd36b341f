"""`kairos config show | validate | generate`: the running config, and files offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kairos_cli.jsonc import strip_comments
from kairos_core import load_config_file

from tests.cli.support import kairos, route_data
from tests.conftest import GatewayFactory

TOKEN = "cli-admin-token-" + "k" * 24


async def test_show_masks_secrets_and_keeps_stdout_json(gateway_factory: GatewayFactory) -> None:
    config = {"version": 1, "admin": {"token": TOKEN}, "routers": [route_data("/a", "/a", 9)]}
    gw = await gateway_factory(config)
    human = await kairos("--token", TOKEN, "config", "show", url=gw.url)
    assert human.code == 0, human.stderr
    assert json.loads(human.stdout)["admin"]["token"] == "***"  # stdout is the JSON alone
    assert "ETag" in human.stderr
    machine = await kairos("--token", TOKEN, "--json", "config", "show", url=gw.url)
    data = machine.json()
    assert data["admin"]["token"] == "***"
    assert [r["external_path"] for r in data["routers"]] == ["/a"]
    assert TOKEN not in machine.stdout + human.stdout


async def test_generate_and_validate_round_trip(tmp_path: Path) -> None:
    commented = await kairos("config", "generate")
    assert commented.code == 0, commented.stderr
    assert commented.stdout.lstrip().startswith("//")
    plain = await kairos("config", "generate", "--format", "json")
    assert json.loads(strip_comments(commented.stdout)) == json.loads(plain.stdout)
    assert (await kairos("--json", "config", "generate")).json() == plain.json()

    jsonc = tmp_path / "kairos.jsonc"
    assert (await kairos("config", "generate", "-o", str(jsonc))).code == 0
    again = await kairos("config", "generate", "-o", str(jsonc))
    assert again.code == 1
    assert "--force" in again.stderr
    assert (await kairos("config", "generate", "-o", str(jsonc), "--force")).code == 0

    checked = await kairos("config", "validate", str(jsonc))
    assert checked.code == 0, checked.stderr
    assert "valid (2 routes)" in checked.stdout
    assert "--output" in checked.stdout  # it has comments: the gateway needs plain JSON

    out = tmp_path / "config.json"
    written = await kairos("config", "validate", str(jsonc), "--output", str(out))
    assert written.code == 0, written.stderr
    assert len(load_config_file(out).routers) == 2  # what the gateway itself loads

    (tmp_path / "plain.json").write_text(plain.stdout)
    machine = await kairos("--json", "config", "validate", str(tmp_path / "plain.json"))
    assert machine.json() == {"valid": True, "errors": []}


async def test_validate_lists_each_error_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    bad = {
        "version": 1,
        "routers": [route_data("users", "/u", 0), route_data("/b", "/b", 1, methods=["FETCH"])],
        "hot_reloads": True,
    }
    path.write_text(json.dumps(bad))
    human = await kairos("config", "validate", str(path))
    assert human.code == 1
    first, *lines = human.stderr.splitlines()
    assert first == f"kairos: {path}: 4 configuration errors"
    paths = [line.strip().split(":")[0] for line in lines]
    assert paths == [
        "routers[0].external_path",
        "routers[0].backends[0].port",
        "routers[1].methods[0]",
        "hot_reloads",
    ]
    assert "did you mean 'hot_reload'" in human.stderr

    machine = await kairos("--json", "config", "validate", str(path))
    assert machine.code == 1
    assert [e["path"] for e in machine.json()["errors"]] == paths


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ('{"version": 1,\n "routers": [}', "invalid JSON at line 2"),
        ('{"version": 1, "version": 1, "routers": []}', "duplicate key 'version'"),
        ('// a comment\n{"version": 1,\n "routers": [,]}', "invalid JSON at line 3"),
    ],
)
async def test_validate_unreadable_or_malformed_is_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    result = await kairos("config", "validate", str(path))
    assert result.code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"kairos: {path}: ")
    assert message in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1} // note', '{"a": 1} '),
        ('{"url": "http://x//y"}', '{"url": "http://x//y"}'),
        ('{"q": "say \\"//hi\\""} // c', '{"q": "say \\"//hi\\""} '),
        ("// only\n// lines\n{}", "\n\n{}"),
    ],
)
def test_strip_comments(text: str, expected: str) -> None:
    assert strip_comments(text) == expected
