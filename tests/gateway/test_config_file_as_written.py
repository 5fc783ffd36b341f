"""A change through the management API rewrites the config file as its author wrote it.

Only what the change changes is rewritten: keys the author did not set stay unset,
keys, routes and kairos-rs spellings keep their order and text, an updated route stays
in place, the indentation and one-line lists are kept; the previous file is kept as a
timestamped backup (bounded count). Assertions are on the file's text.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from kairos_core import load_config
from kairos_gateway import AccessLog, Gateway, GatewaySettings
from kairos_gateway.management.store import backups_of
from kairos_gateway.management.written import updated_text
from tornado.testing import bind_unused_port

from tests.conftest import RunningGateway, stop_at_rest
from tests.support import EchoBackend, api_call, raw_request, route

SECRET = "a-hand-written-secret-of-32-chars!!"

#: Four-space indentation, one-line lists and objects, a kairos-rs ``retry`` block and
#: the legacy single-backend route form; no defaults filled in.
HAND_WRITTEN = """\
{
    "version": 1,
    "jwt_secret": "SECRET",
    "routers": [
        {
            "external_path": "/api/users/{id}",
            "internal_path": "/users/{id}",
            "methods": ["GET", "PUT"],
            "backends": [{"host": "http://127.0.0.1", "port": PORT}]
        },

        {
            "external_path": "/api/orders",
            "internal_path": "/orders",
            "methods": ["get", "POST"],
            "backends": [
                {"host": "http://127.0.0.1", "port": PORT},
                {"host": "http://127.0.0.1", "port": PORT, "weight": 2}
            ],
            "retry": {"max_retries": 2, "retry_on_status_codes": [502, 503]},
            "timeouts": {"read_ms": 5000}
        },
        {
            "external_path": "/legacy",
            "internal_path": "/legacy",
            "methods": ["GET"],
            "host": "http://127.0.0.1",
            "port": PORT
        }
    ]
}
"""

ItemsRoute = dict[str, object]
Start = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def hand_written(tmp_path: Path) -> AsyncIterator[Start]:
    """Runs a gateway from ``text`` written to ``tmp_path/config.json`` byte for byte."""
    started: list[Gateway] = []

    async def start(text: str, name: str = "config.json") -> RunningGateway:
        source = tmp_path / name
        source.write_text(text)
        gateway = Gateway(
            load_config(json.loads(text)),
            GatewaySettings(),
            source=source,
            access_log=AccessLog(io.BytesIO(), "json"),
        )
        sock, port = bind_unused_port()
        await gateway.start([sock])
        started.append(gateway)
        return RunningGateway(gateway, port, io.BytesIO())

    yield start
    for gateway in started:
        await stop_at_rest(gateway)


def text_for(backend: EchoBackend) -> str:
    return HAND_WRITTEN.replace("PORT", str(backend.port)).replace("SECRET", SECRET)


def source_of(gw: RunningGateway) -> Path:
    source = gw.gateway.runtime.snapshot.source
    assert source is not None
    return source


async def test_add_update_and_delete_rewrite_only_what_changed(
    backend: EchoBackend, hand_written: Start
) -> None:
    original = text_for(backend)
    gw = await hand_written(original)
    source = source_of(gw)

    items = route("/api/items/{id}", "/items/{id}", [backend], methods=["GET"])
    resp = await api_call(gw.port, "POST", "/api/routes", items)
    assert resp.status == 201, resp.body
    added = f"""\
        }},
        {{
            "external_path": "/api/items/{{id}}",
            "internal_path": "/items/{{id}}",
            "methods": ["GET"],
            "backends": [
                {{"host": "http://127.0.0.1", "port": {backend.port}}}
            ]
        }}
    ]
}}
"""
    after_add = original.removesuffix("        }\n    ]\n}\n") + added
    assert source.read_text() == after_add
    assert (await raw_request(gw.port, "/api/items/1")).status == 200

    # PUT the orders route back as GET shows it, with one backend's weight changed.
    orders = (await api_call(gw.port, "GET", "/api/routes/%2Fapi%2Forders")).json()
    orders["backends"][1]["weight"] = 5
    orders["timeouts"]["read_ms"] = 7000
    resp = await api_call(gw.port, "PUT", "/api/routes/%2Fapi%2Forders", orders)
    assert resp.status == 200, resp.body
    after_update = after_add.replace(
        f'"port": {backend.port}, "weight": 2}}', f'"port": {backend.port}, "weight": 5}}'
    ).replace('"timeouts": {"read_ms": 5000}', '"timeouts": {"read_ms": 7000}')
    assert after_update != after_add
    assert source.read_text() == after_update

    resp = await api_call(gw.port, "DELETE", "/api/routes/%2Fapi%2Fusers%2F%7Bid%7D")
    assert resp.status == 204
    users_block = after_update[after_update.index("        {\n") : after_update.index("\n\n") + 2]
    assert source.read_text() == after_update.replace(users_block, "", 1)
    assert load_config(json.loads(source.read_text())) == gw.gateway.runtime.snapshot.config


async def test_an_updated_route_stays_in_place_even_under_a_new_path(
    backend: EchoBackend, hand_written: Start
) -> None:
    original = text_for(backend)
    gw = await hand_written(original)
    users = (await api_call(gw.port, "GET", "/api/routes/%2Fapi%2Fusers%2F%7Bid%7D")).json()
    users["external_path"] = "/api/people/{id}"
    users["methods"] = ["GET", "PUT", "PATCH"]
    resp = await api_call(gw.port, "PUT", "/api/routes/%2Fapi%2Fusers%2F%7Bid%7D", users)
    assert resp.status == 200, resp.body
    assert source_of(gw).read_text() == original.replace(
        '"/api/users/{id}"', '"/api/people/{id}"'
    ).replace('["GET", "PUT"]', '["GET", "PUT", "PATCH"]')
    paths = [r.external_path for r in gw.gateway.runtime.snapshot.config.routers]
    assert paths == ["/api/people/{id}", "/api/orders", "/legacy"]


async def test_a_whole_config_put_back_changes_only_the_changed_setting(
    backend: EchoBackend, hand_written: Start
) -> None:
    original = text_for(backend)
    gw = await hand_written(original)
    shown = (await api_call(gw.port, "GET", "/api/config")).json()
    assert shown["jwt_secret"] == "***"
    shown["max_body_size"] = 1024
    resp = await api_call(gw.port, "PUT", "/api/config", shown)
    assert resp.status == 200, resp.body
    # The secret stays as written (never "***"); defaults shown by GET are not written.
    assert source_of(gw).read_text() == original.replace(
        "\n    ]\n}\n", '\n    ],\n    "max_body_size": 1024\n}\n'
    )

    resp = await api_call(
        gw.port, "PUT", "/api/config/cors", {"allowed_origins": ["https://a.test"]}
    )
    assert resp.status == 200, resp.body
    assert source_of(gw).read_text() == original.replace(
        "\n    ]\n}\n",
        '\n    ],\n    "max_body_size": 1024,\n'
        '    "cors": {\n        "allowed_origins": ["https://a.test"]\n    }\n}\n',
    )


async def test_each_write_keeps_the_previous_file_and_old_backups_are_rotated(
    backend: EchoBackend, hand_written: Start, tmp_path: Path
) -> None:
    original = text_for(backend).replace(
        '    "version": 1,\n',
        '    "version": 1,\n    "admin": {"backups": {"dir": "old", "keep": 2}},\n',
    )
    gw = await hand_written(original)
    source = source_of(gw)
    versions = [original]
    for n in range(3):
        body = route(f"/r{n}", f"/r{n}", [backend], methods=["GET"])
        assert (await api_call(gw.port, "POST", "/api/routes", body)).status == 201
        versions.append(source.read_text())
    kept = backups_of(tmp_path / "old", "config.json")
    assert [p.read_text() for p in kept] == versions[1:3]  # the two newest previous files
    for path in kept:
        assert re.fullmatch(r"config\.json\.\d{8}T\d{6}\.\d{6}Z\.bak", path.name), path.name
        assert path.stat().st_mode & 0o777 == source.stat().st_mode & 0o777
    assert not (tmp_path / ".kairos-backups").exists()


async def test_backups_go_next_to_the_file_by_default(
    backend: EchoBackend, hand_written: Start, tmp_path: Path
) -> None:
    original = text_for(backend)
    gw = await hand_written(original)
    body = route("/r", "/r", [backend], methods=["GET"])
    assert (await api_call(gw.port, "POST", "/api/routes", body)).status == 201
    kept = backups_of(tmp_path / ".kairos-backups", "config.json")
    assert [p.read_text() for p in kept] == [original]


async def test_a_change_that_changes_nothing_writes_nothing(
    backend: EchoBackend, hand_written: Start, tmp_path: Path
) -> None:
    original = text_for(backend)
    gw = await hand_written(original)
    orders = (await api_call(gw.port, "GET", "/api/routes/%2Fapi%2Forders")).json()
    resp = await api_call(gw.port, "PUT", "/api/routes/%2Fapi%2Forders", orders)
    assert resp.status == 200, resp.body
    assert source_of(gw).read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # and no backup


async def test_no_backups_with_keep_zero(
    backend: EchoBackend, hand_written: Start, tmp_path: Path
) -> None:
    original = text_for(backend).replace(
        '    "version": 1,\n', '    "version": 1,\n    "admin": {"backups": {"keep": 0}},\n'
    )
    gw = await hand_written(original)
    body = route("/r", "/r", [backend], methods=["GET"])
    assert (await api_call(gw.port, "POST", "/api/routes", body)).status == 201
    # The audit trail keeps its own directory; no backup is made.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kairos-audit", "config.json"]


# The merge on its own, on files of other shapes.

_ROUTE = {"internal_path": "/x", "methods": ["GET"], "backends": [{"host": "http://h", "port": 1}]}


def _config(*paths: str, **top: object) -> dict[str, object]:
    return {**top, "routers": [{"external_path": p, **_ROUTE} for p in paths]}


def test_a_one_line_file_stays_on_one_line() -> None:
    text = (
        '{"routers":[{"external_path":"/a","internal_path":"/x","methods":["GET"],'
        '"backends":[{"host":"http://h","port":1}]}]}'
    )
    new = load_config(_config("/a", "/b"))
    assert updated_text(text, load_config(json.loads(text)), new) == text[:-2] + (
        ', {"external_path": "/b", "internal_path": "/x", "methods": ["GET"], '
        '"backends": [{"host": "http://h", "port": 1}]}]}'
    )


def test_tab_indentation_is_kept() -> None:
    text = (
        '{\n\t"routers": [\n\t\t{"external_path": "/a", "internal_path": "/x", '
        '"methods": ["GET"], "backends": [{"host": "http://h", "port": 1}]}\n\t]\n}\n'
    )
    new = load_config(_config("/a", "/b"))
    assert updated_text(text, load_config(json.loads(text)), new) == text.replace(
        "}]}\n\t]",
        '}]},\n\t\t{\n\t\t\t"external_path": "/b",\n\t\t\t"internal_path": "/x",\n'
        '\t\t\t"methods": ["GET"],\n\t\t\t"backends": [\n\t\t\t\t{"host": "http://h", "port": 1}\n'
        "\t\t\t]\n\t\t}\n\t]",
    )


def test_an_empty_route_list_gets_its_first_route_on_lines_of_its_own() -> None:
    text = '{\n  "routers": []\n}\n'
    new = load_config(_config("/a"))
    assert updated_text(text, load_config(json.loads(text)), new) == (
        '{\n  "routers": [\n    {\n      "external_path": "/a",\n      "internal_path": "/x",\n'
        '      "methods": ["GET"],\n      "backends": [\n        {"host": "http://h", "port": 1}\n'
        "      ]\n    }\n  ]\n}\n"
    )


def test_unchanged_values_keep_their_exact_text() -> None:
    text = (
        '{ "routers": [] ,\n  "rate_limit" : {"window_type": "SlidingWindow", '
        '"requests_per_window": 100, "window_seconds": 60.0} }'
    )
    old = load_config(json.loads(text))
    new = load_config({**json.loads(text), "forwarded_header": True})
    assert updated_text(text, old, new) == text[:-2] + ',\n  "forwarded_header": true }'


def test_a_legacy_route_given_new_backends_is_rewritten_in_canonical_form() -> None:
    text = (
        '{\n  "routers": [\n    {"external_path": "/l", "internal_path": "/l", "methods": ["GET"], '
        '"host": "http://a", "port": 1, "retry": {"max_retries": 1}},\n'
        '    {"external_path": "/k", "internal_path": "/k", "methods": ["GET"], '
        '"host": "http://a", "port": 1}\n  ]\n}\n'
    )
    old = load_config(json.loads(text))
    data = json.loads(text)
    data["routers"][0] = {
        **{k: v for k, v in data["routers"][0].items() if k not in ("host", "port")},
        "backends": [{"host": "http://a", "port": 1}, {"host": "http://b", "port": 2}],
    }
    new = load_config(data)
    kept = text.splitlines()[3]
    assert updated_text(text, old, new) == (
        '{\n  "routers": [\n    {\n      "external_path": "/l",\n      "internal_path": "/l",\n'
        '      "methods": ["GET"],\n      "backends": [\n        {"host": "http://a", "port": 1},\n'
        '        {"host": "http://b", "port": 2}\n      ],\n'
        '      "retry_config": {"max_retries": 1}\n    },\n' + kept + "\n  ]\n}\n"
    )
