"""The live module's refresh rule: events arriving during a refresh run it once more
afterwards, not once each (a burst of changes must not queue a burst of reloads)."""

from __future__ import annotations

import asyncio

from kairos_ui.live import _Refresher


async def test_a_burst_of_events_during_a_refresh_runs_it_once_more() -> None:
    runs = 0
    release = asyncio.Event()

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        await release.wait()

    refresher = _Refresher(refresh)
    first = asyncio.create_task(refresher())
    await asyncio.sleep(0)
    for _ in range(5):  # arrive while the first refresh is running
        await refresher()
    release.set()
    await asyncio.wait_for(first, 2)
    assert runs == 2
    await refresher()  # idle again: runs at once
    assert runs == 3
