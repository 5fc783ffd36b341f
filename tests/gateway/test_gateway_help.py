"""`kairos-gateway --help` lists the environment variables the gateway reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kairos_gateway import cli as gateway_cli

SETTINGS = Path(gateway_cli.__file__).with_name("settings.py")


def test_help_lists_every_kairos_variable_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        gateway_cli.main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert "environment variables" in shown
    read = set(re.findall(r'"(KAIROS_[A-Z_]+)"', SETTINGS.read_text()))
    assert read, "settings.py reads no KAIROS_* variable?"
    for name in sorted(read):
        line = next((line for line in shown.splitlines() if line.split()[:1] == [name]), None)
        assert line is not None, f"{name} is not in --help"
        assert line.rstrip().endswith(")"), f"{name}: no default shown: {line!r}"
    assert "(5900)" in shown
    assert "RUST_LOG" in shown
