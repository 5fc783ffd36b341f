"""`schemathesis run --checks all` over every phase against a real gateway: 0 failures.

The gateway runs in-process from a config file (so writes are saved, and the state
checked after every test must still be at rest after thousands of changes); the
schemathesis CLI runs as a subprocess with the repository's ``schemathesis.toml``, a
fixed seed and a bounded number of examples per operation and stateful scenario, so
the run is repeatable and takes well under a minute.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import GatewayFactory
from tests.support import EchoBackend, route

ROOT = Path(__file__).resolve().parents[2]
#: Examples per operation (fuzzing) and steps per stateful scenario: bounded for time;
#: the coverage phase generates its whole, fixed set of cases regardless.
EXAMPLES = 5
MAX_STEPS = 4
SEED = 7


def _schemathesis() -> list[str]:
    """The schemathesis CLI of this environment (installed as a dev dependency)."""
    script = Path(sys.executable).with_name("schemathesis")
    return [str(script)] if script.exists() else [sys.executable, "-m", "schemathesis.cli"]


async def test_schemathesis_all_checks_all_phases_find_no_failure(
    backend: EchoBackend, file_gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await file_gateway_factory(
        {"version": 1, "hot_reload": False, "routers": [route("/a", "/a", [backend])]}
    )
    # The repository's settings, with the stateful phase's scenarios kept short.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        (ROOT / "schemathesis.toml").read_text() + f"\n[phases.stateful]\nmax-steps = {MAX_STEPS}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *_schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{gw.url}/api/openapi.json",
        "--url",
        gw.url,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        cwd=tmp_path,
        env=os.environ.copy(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await proc.communicate()
    report = output.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
    summary = report.rsplit("SUMMARY", 1)[-1]
    # Every phase ran and passed: the examples phase has the document's request
    # examples, the stateful phase follows its links.
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"\u2705 {phase}" in summary, report
    assert " passed" in summary, report
    assert "failure" not in summary, report
