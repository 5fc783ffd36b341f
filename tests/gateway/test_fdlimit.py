"""The open-file limit: raised at start, and a warning when the config needs more."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable

from kairos_core import load_config
from kairos_gateway.fdlimit import CLIENT_HEADROOM, needed_descriptors

from tests.support import clean_env

PROBE = """
import json, logging, resource, sys
from kairos_core import load_config
from kairos_gateway.fdlimit import raise_fd_limit
from kairos_gateway.logs import configure
configure("json", logging.INFO)
config = load_config(json.loads(sys.argv[1]))
print(raise_fd_limit(config), resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
"""


def _limited(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def _run(
    config: dict[str, object], soft: int, hard: int
) -> tuple[list[int], list[dict[str, object]]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        preexec_fn=_limited(soft, hard),
        check=True,
    )
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return [int(x) for x in proc.stdout.split()], records


def _route(path: str, *max_connections: int) -> dict[str, object]:
    backends = [
        {"host": "http://127.0.0.1", "port": 8000 + i, "max_connections": limit}
        for i, limit in enumerate(max_connections)
    ]
    return {"external_path": path, "internal_path": "/", "methods": ["GET"], "backends": backends}


def _config(*max_connections: int) -> dict[str, object]:
    return {"routers": [_route("/a", *max_connections)]}


def test_needed_descriptors_count_each_backend_once() -> None:
    config = load_config(_config(100, 200))
    assert needed_descriptors(config) == 300 + CLIENT_HEADROOM
    twice = load_config(
        {
            "routers": [
                *_config(100)["routers"],
                {**_config(100)["routers"][0], "external_path": "/b"},
            ]
        }  # type: ignore[index]
    )
    assert needed_descriptors(twice) == 100 + CLIENT_HEADROOM


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft_limit = min(256, hard)
    (returned, in_force), records = _run(_config(10), soft_limit, hard)
    assert returned == in_force == hard
    if hard >= 10 + CLIENT_HEADROOM:
        assert not [r for r in records if "open-file limit" in str(r["message"])]


def test_a_limit_too_low_for_the_config_is_reported() -> None:
    (returned, _), records = _run(_config(1024), 512, 512)
    assert returned == 512
    (warning,) = [r for r in records if "open-file limit" in str(r["message"])]
    assert warning["level"] == "warning"
    assert (warning["limit"], warning["needed"]) == (512, 1024 + CLIENT_HEADROOM)
