"""`kairos plugins` against a real gateway with a plugin installed through entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import kairos
from tests.conftest import GatewayFactory
from tests.sample_plugin import DISTRIBUTION, VERSION, installed_plugin_gateway

BUILTINS = ["security_headers", "cors", "body_limit", "client_cert", "jwt", "rate_limit"]
TOKEN = "cli-admin-token-" + "p" * 24


def _row(stdout: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name``."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells[0] == name:
            return cells
    raise AssertionError(f"no row for {name!r} in:\n{stdout}")


async def test_table_json_and_load_errors_as_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with installed_plugin_gateway({"version": 1, "routers": []}, tmp_path, monkeypatch) as gw:
        human = await kairos("plugins", url=gw.url)
        machine = await kairos("--json", "plugins", url=gw.url)

    assert human.code == 0, human.stderr
    assert _row(human.stdout, "stamp") == [
        "stamp",
        "plugin",
        "700",
        "on_response",
        f"{DISTRIBUTION} {VERSION}",
        "stamps every response with a header",
    ]
    jwt = _row(human.stdout, "jwt")
    assert jwt[1:5] == ["builtin", "1450", "on_request, before_upstream", "-"]
    # Highest priority first: the built-ins, then the plugin (700).
    assert human.stdout.index("security_headers") < human.stdout.index("rate_limit")
    assert human.stdout.index("rate_limit") < human.stdout.index("stamp")
    warning, *rest = human.stderr.splitlines()
    assert warning.startswith("warning: plugin 'broken' not loaded: cannot be loaded: ")
    assert rest == []

    assert machine.code == 0, machine.stderr
    assert machine.stderr == ""
    data = machine.json()
    assert [p["name"] for p in data["plugins"]] == [
        *BUILTINS[:5],
        "cache",
        "rate_limit",
        "transform",
        "stamp",
        "ai",
    ]
    stamp = data["plugins"][-2]
    assert (stamp["builtin"], stamp["package"], stamp["version"]) == (False, DISTRIBUTION, VERSION)
    assert stamp["config_schema"]["required"] == ["value"]
    assert list(data["errors"]) == ["broken"]


async def test_builtins_with_the_admin_token(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"version": 1, "routers": []}, admin_token=TOKEN)
    refused = await kairos("plugins", url=gw.url)
    assert refused.code == 4
    assert refused.stderr.startswith("kairos: 401 ")

    human = await kairos("--token", TOKEN, "plugins", url=gw.url)
    assert human.code == 0, human.stderr
    # Plugins installed in this environment may be listed too; the built-ins always are.
    for name in BUILTINS:
        assert _row(human.stdout, name)[1] == "builtin"
