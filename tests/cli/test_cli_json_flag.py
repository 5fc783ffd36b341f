"""`--json` after the subcommand works like the global one, for every command."""

from __future__ import annotations

import click
import pytest
from kairos_cli import cli

from tests.cli.support import kairos, route_data
from tests.conftest import GatewayFactory


def _leaves(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(command, click.Group):
        return [
            leaf for name, sub in command.commands.items() for leaf in _leaves(sub, (*path, name))
        ]
    return [path]


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", _leaves(cli), ids=" ".join)
def test_every_command_takes_json_after_its_name(path: tuple[str, ...]) -> None:
    assert any("--json" in param.opts for param in _command(path).params)


async def test_json_after_the_subcommand_equals_the_global_flag(
    file_gateway_factory: GatewayFactory,
) -> None:
    gw = await file_gateway_factory(
        {"version": 1, "hot_reload": False, "routers": [route_data("/users/{id}", "/u/{id}", 9)]}
    )
    for args in (("routes", "list"), ("routes", "show", "/users/{id}"), ("plugins",)):
        after = await kairos(*args, "--json", url=gw.url)
        before = await kairos("--json", *args, url=gw.url)
        assert after.code == before.code == 0, after.stderr
        assert after.json() == before.json()
    listed = (await kairos("routes", "list", "--json", url=gw.url)).json()
    assert [r["external_path"] for r in listed["routes"]] == ["/users/{id}"]


async def test_json_after_the_subcommand_for_an_offline_command() -> None:
    after = await kairos("config", "generate", "--json")
    before = await kairos("--json", "config", "generate")
    assert after.code == before.code == 0, after.stderr
    assert after.stdout == before.stdout
    assert after.stdout != (await kairos("config", "generate")).stdout  # no comments
