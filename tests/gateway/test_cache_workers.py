"""A purge through one worker reaches every worker's memory store (``--workers 2``), as
a real process tree."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from tests.gateway.test_cache import Origin, cache, origin
from tests.gateway.test_workers import _pids
from tests.support import api_call, gateway_process, raw_request, route

__all__ = ["origin"]  # the fixture

#: Fresh connections in a row: each worker is missed by all of them with probability
#: 2^-40 (the kernel spreads connections over the workers).
_ROUND = 40


async def _labels(port: int) -> list[str | None]:
    return [(await raw_request(port, "/c/w")).header("X-Cache") for _ in range(_ROUND)]


async def test_a_purge_through_one_worker_empties_every_workers_store(
    tmp_path: Path, origin: Origin
) -> None:
    origin.reply("w", ("Cache-Control", "max-age=300"), ("Cache-Tag", "shop"))
    path = tmp_path / "config.json"
    config = {"version": 1, "routers": [route("/c/{*rest}", "/{*rest}", [origin], plugins=cache())]}
    path.write_text(json.dumps(config))
    async with gateway_process("--config", str(path), "--workers", "2", cwd=tmp_path) as (
        proc,
        port,
        _,
    ):
        assert len(await _pids(port)) == 2
        async with asyncio.timeout(10):
            while set(await _labels(port)) != {"HIT"}:
                pass
        assert origin.hits["w"] == 2  # each worker stored it once

        purged = await api_call(port, "DELETE", "/api/cache?tag=shop")
        assert purged.status == 200
        assert purged.json() == {
            "purged": 2,
            "key": None,
            "route": None,
            "tag": "shop",
            "workers": 2,
            "workers_pending": 0,
        }

        labels = await _labels(port)
        assert labels.count("MISS") == 2  # the first request on each worker
        assert origin.hits["w"] == 4

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
