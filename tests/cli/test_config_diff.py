"""`config_diff`: the merge `config apply` sends and the diff it shows (pure data)."""

from __future__ import annotations

from typing import Any

from kairos_cli.config_diff import diff, target
from kairos_core import GatewayConfig, derived_route_id, load_config

from tests.cli.support import route_data


def _full(data: dict[str, Any]) -> dict[str, Any]:
    config = load_config(data, redacted=True)
    full: dict[str, Any] = config.model_dump(
        mode="json", exclude_none=True, context={"reveal_secrets": True}
    )
    return full


def _file(data: dict[str, Any]) -> tuple[GatewayConfig, dict[str, Any]]:
    return load_config(data, redacted=True), _full(data)


LIVE = _full(
    {
        "max_body_size": 100,
        "rate_limit": {"requests_per_second": 5, "burst_size": 10},
        "routers": [
            route_data("/a", "/a", 1, name="a"),
            route_data("/b", "/b", 1),
        ],
    }
)


def test_without_prune_the_file_is_laid_over_the_live_config() -> None:
    config, data = _file({"routers": [route_data("/a", "/a2", 1, name="a")], "max_body_size": 7})
    sent = target(LIVE, config, data, prune=False)
    assert [r["internal_path"] for r in sent["routers"]] == ["/a2", "/b"]
    assert sent["max_body_size"] == 7
    assert sent["rate_limit"] == LIVE["rate_limit"]  # not written in the file: kept
    changes = diff(LIVE, sent, file_ids={"a"})
    assert [c.as_json() for c in changes.changes] == [
        {
            "route": "a",
            "change": "changed",
            "label": "GET /a",
            "fields": [{"path": "internal_path", "old": "/a", "new": "/a2"}],
        },
        {
            "setting": "max_body_size",
            "change": "changed",
            "fields": [{"path": "", "old": 100, "new": 7}],
        },
    ]
    assert changes.kept == [derived_route_id(["GET"], "/b")]
    assert changes.counts() == "routes: 1 changed; settings: 1 changed"


def test_with_prune_the_file_is_the_config() -> None:
    config, data = _file({"routers": [route_data("/c", "/c", 1, name="c")]})
    sent = target(LIVE, config, data, prune=True)
    changes = diff(LIVE, sent)
    summary = [(c.subject, c.key, c.change) for c in changes.changes]
    assert summary == [
        ("route", "c", "added"),
        ("route", "a", "removed"),
        ("route", derived_route_id(["GET"], "/b"), "removed"),
        ("setting", "rate_limit", "removed"),
        ("setting", "max_body_size", "changed"),
    ]
    assert changes.kept == []


def test_a_setting_written_as_null_is_removed_and_the_same_config_is_in_sync() -> None:
    config, data = _file({"routers": [], "rate_limit": None})
    sent = target(LIVE, config, data, prune=False)
    assert "rate_limit" not in sent
    assert [c.as_json() for c in diff(LIVE, sent).changes] == [
        {"setting": "rate_limit", "change": "removed"}
    ]
    same = target(LIVE, *_file(LIVE), prune=True)
    assert diff(LIVE, same).in_sync
