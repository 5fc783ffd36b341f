"""Access-log lines are valid JSON (or readable text) whatever the request contained."""

from __future__ import annotations

import io
import json

import pytest
from kairos_gateway import AccessLog


def _record(log: AccessLog, path: str) -> None:
    log.record(
        request_id="r-1",
        method="GET",
        path=path,
        route="/a/{id}",
        backend="http://127.0.0.1:8080",
        status=200,
        duration_s=0.0012345,
        bytes_in=0,
        bytes_out=17,
        client="::1",
    )


@pytest.mark.parametrize("path", ['/a"b', "/a\\b", "/caf\u00e9", "/tab\there", "/nul\x00"])
def test_json_lines_survive_awkward_paths(path: str) -> None:
    buffer = io.BytesIO()
    log = AccessLog(buffer, "json")
    _record(log, path)
    log.flush()
    line = json.loads(buffer.getvalue())
    assert line["path"] == path
    assert line["duration_ms"] == 1.234
    assert line["type"] == "access"


def test_lines_are_batched_and_written_on_close() -> None:
    buffer = io.BytesIO()
    log = AccessLog(buffer, "text")
    for _ in range(3):
        _record(log, "/x")
    assert buffer.getvalue() == b""  # batched, not written per request
    log.flush()
    lines = buffer.getvalue().decode().splitlines()
    assert len(lines) == 3
    assert " GET /x 200 " in lines[0]
    assert "route=/a/{id}" in lines[0]


def test_off_writes_nothing() -> None:
    log = AccessLog.open("off", "json")
    assert not log.enabled
    _record(log, "/x")
    log.close()
