"""Route names, tags and ids: what is accepted, what is refused (with field paths)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from kairos_core import MAX_TAGS, ConfigError, derived_route_id, load_config


def _route(path: str = "/a", methods: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "external_path": path,
        "internal_path": "/x",
        "methods": methods or ["GET"],
        "backends": [{"host": "http://127.0.0.1", "port": 9}],
        **extra,
    }


def _errors(*routes: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config({"routers": list(routes)})
    return [(e.path, e.message) for e in caught.value.errors]


def test_derived_id_is_the_documented_hash_of_methods_and_path() -> None:
    expected = "r-" + hashlib.sha256(b"GET,POST /api/users/{id}").hexdigest()[:12]
    assert derived_route_id(["POST", "GET"], "/api/users/{id}") == expected
    assert derived_route_id(["get", "post", "GET"], "/api/users/{id}") == expected
    config = load_config({"routers": [_route("/api/users/{id}", ["post", "GET"])]})
    assert config.routers[0].id == expected
    assert config.routers[0].name is None


def test_a_name_is_the_id_and_a_config_without_names_loads() -> None:
    config = load_config(
        {"routers": [_route("/a", name="users", tags=["team:payments", "v2"]), _route("/b")]}
    )
    named, unnamed = config.routers
    assert named.id == "users"
    assert named.tags == ["team:payments", "v2"]
    assert unnamed.id == derived_route_id(["GET"], "/b")


def test_duplicate_names_are_refused_at_the_later_route() -> None:
    errors = _errors(_route("/a", name="users"), _route("/b"), _route("/c", name="users"))
    assert errors == [
        ("routers[2].name", "routers[0] has the same name; route names must be unique")
    ]


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ({"name": "a b"}, "name", "should match pattern"),
        ({"name": "/users"}, "name", "should match pattern"),
        ({"name": "x" * 65}, "name", "should match pattern"),
        ({"name": "r-0123456789ab"}, "name", "kept for the ids of unnamed routes"),
        ({"name": "validate"}, "name", "reserved"),
        ({"tags": ["ok", "not ok"]}, "tags[1]", "should match pattern"),
        ({"tags": ["a", "b", "a"]}, "tags", "given more than once: a"),
        ({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}, "tags", f"at most {MAX_TAGS}"),
        ({"tags": "shop"}, "tags", "list"),
    ],
)
def test_bad_names_and_tags_are_refused_with_their_path(
    extra: dict[str, Any], path: str, message: str
) -> None:
    errors = _errors(_route(**extra))
    assert len(errors) == 1, errors
    assert errors[0][0] == f"routers[0].{path}"
    assert message in errors[0][1]


def test_as_many_tags_as_allowed_load() -> None:
    tags = [f"t{i}" for i in range(MAX_TAGS)]
    assert load_config({"routers": [_route(tags=tags)]}).routers[0].tags == tags
