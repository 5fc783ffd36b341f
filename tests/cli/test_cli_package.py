"""The package's public face: exports, typing marker, no import cycles, the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kairos_cli

PACKAGE = Path(kairos_cli.__file__).parent
MODULES = sorted(
    ".".join(("kairos_cli", *path.relative_to(PACKAGE).with_suffix("").parts))
    for path in PACKAGE.rglob("*.py")
    if path.stem not in ("__init__", "__main__")
)


def test_all_names_exist_and_the_package_is_typed() -> None:
    assert sorted(kairos_cli.__all__) == sorted(set(kairos_cli.__all__))
    for name in kairos_cli.__all__:
        assert hasattr(kairos_cli, name), name
    assert (PACKAGE / "py.typed").exists()
    assert (PACKAGE / "example.jsonc").exists()


def test_each_module_imports_first_without_a_cycle() -> None:
    # One interpreter; each module is imported first after forgetting the package.
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('kairos_cli')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "assert 'kairos_gateway' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_console_script_runs() -> None:
    script = Path(sys.executable).with_name("kairos")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == f"kairos, version {kairos_cli.__version__}"
    module = subprocess.run(
        [sys.executable, "-m", "kairos_cli", "config", "generate", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert '"routers"' in module.stdout
